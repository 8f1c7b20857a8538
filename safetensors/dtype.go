package safetensors

// DType is a safetensors dtype name: BOOL, U8, I8, F8_E4M3, F8_E5M2, I16,
// U16, F16, BF16, I32, U32, F32, F64, I64, U64. The whole-byte dtypes added
// to the format later (F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ, C64) are known too;
// the sub-byte ones (F4, F6_*) are not, so files using them are rejected.
type DType string

// The dtypes this package knows.
const (
	Bool       DType = "BOOL"
	U8         DType = "U8"
	I8         DType = "I8"
	F8E4M3     DType = "F8_E4M3"
	F8E5M2     DType = "F8_E5M2"
	F8E8M0     DType = "F8_E8M0"
	F8E4M3FNUZ DType = "F8_E4M3FNUZ"
	F8E5M2FNUZ DType = "F8_E5M2FNUZ"
	I16        DType = "I16"
	U16        DType = "U16"
	F16        DType = "F16"
	BF16       DType = "BF16"
	I32        DType = "I32"
	U32        DType = "U32"
	F32        DType = "F32"
	C64        DType = "C64"
	F64        DType = "F64"
	I64        DType = "I64"
	U64        DType = "U64"
)

// DTypes lists every known dtype, in the reference implementation's enum order.
func DTypes() []DType {
	return []DType{Bool, U8, I8, F8E5M2, F8E4M3, F8E8M0, F8E4M3FNUZ, F8E5M2FNUZ,
		I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64}
}

// knownDType returns the dtype named by b, sharing the constant's string when
// it is known so that parsing a table does not allocate one per tensor.
func knownDType(b []byte) DType {
	for _, d := range DTypes() {
		if string(d) == string(b) {
			return d
		}
	}
	return DType(b)
}

// Size returns the bytes per element; 0 for unknown dtypes.
func (d DType) Size() int {
	switch d {
	case Bool, U8, I8, F8E4M3, F8E5M2, F8E8M0, F8E4M3FNUZ, F8E5M2FNUZ:
		return 1
	case I16, U16, F16, BF16:
		return 2
	case I32, U32, F32:
		return 4
	case C64, F64, I64, U64:
		return 8
	}
	return 0
}

// Valid reports whether d is a dtype this package knows.
func (d DType) Valid() bool { return d.Size() != 0 }

// NumpyDescr returns the numpy dtype descr ("<f4", "|b1", "<f2", ...) and
// false for dtypes numpy lacks (BF16, F8_*).
func (d DType) NumpyDescr() (string, bool) {
	switch d {
	case Bool:
		return "|b1", true
	case U8:
		return "|u1", true
	case I8:
		return "|i1", true
	case I16:
		return "<i2", true
	case U16:
		return "<u2", true
	case F16:
		return "<f2", true
	case I32:
		return "<i4", true
	case U32:
		return "<u4", true
	case F32:
		return "<f4", true
	case C64:
		return "<c8", true
	case F64:
		return "<f8", true
	case I64:
		return "<i8", true
	case U64:
		return "<u8", true
	}
	return "", false
}

// Package safetensors parses, validates and writes safetensors files and
// exposes their tensor table: which tensor lives at which byte range.
//
// A safetensors file is an 8-byte little-endian header length N, N bytes of
// UTF-8 JSON, then a byte buffer that the tensors tile exactly. Validation
// follows the reference reader (huggingface/safetensors, tensor.rs), so a
// file accepted here is one that PyTorch users can load, and every rejection
// wraps ErrNotSafetensors with a message saying what is wrong.
package safetensors

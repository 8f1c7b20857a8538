// Package integration runs ipfrs-mount as a user would: the real binary,
// real files in temporary directories, and the results compared byte for
// byte.
package integration

module serve-chaos/runc-shim

go 1.24

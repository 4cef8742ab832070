//! Integration tests: they start the real rgun binary and talk to it over real sockets.

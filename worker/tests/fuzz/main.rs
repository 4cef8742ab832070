//! Property tests of what reads untrusted bytes: the request head parser,
//! the chunked body decoder and the PROXY protocol decoder. Each property
//! runs a fixed number of generated inputs (`keep::config`), so that the
//! whole takes seconds in `cargo test`; a failure keeps its input (`keep`)
//! to be replayed and turned into a corpus case. They use the crate's
//! public API only, as the server's connection code does.

mod chunked;
mod head;
mod keep;
mod proxy;

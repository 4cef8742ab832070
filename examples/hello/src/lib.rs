//! The smallest rgun application: `rgun target/release/libhello.so:app`.

use rgun_gateway::{Error, Request, Response, export_app};

fn hello(_request: &mut Request<'_>) -> Result<Response<'static>, Error> {
    Ok(Response::text(200, "Hello, World!\n"))
}

export_app!(app, handler = hello);

rgun_gateway::export_app!(app, handler = h); fn h(_r: &mut rgun_gateway::Request<'_>) -> Result<rgun_gateway::Response<'static>, rgun_gateway::Error> { Ok(rgun_gateway::Response::new(404)) }

//! A bare Pingora reverse proxy: one upstream, no filters, no logging.
//! It measures what the framework itself costs, as a benchmark peer of Sluice.
//!
//! `bare-pingora --listen 127.0.0.1:18083 --upstream 127.0.0.1:18081 --threads 2`

#![warn(missing_docs)]

use std::net::SocketAddr;

use async_trait::async_trait;
use clap::Parser;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

#[derive(Parser, Debug)]
#[command(
    name = "bare-pingora",
    about = "A bare Pingora reverse proxy (benchmark peer)"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18083")]
    listen: String,
    /// Upstream `ip:port` (plain HTTP/1.1).
    #[arg(long, default_value = "127.0.0.1:18081")]
    upstream: SocketAddr,
    /// Worker threads of the proxy service.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

struct Bare {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let args = Args::parse();

    // Same runtime shape as Sluice: N threads, one single-threaded runtime each.
    let port = args.listen.rsplit(':').next().unwrap_or("0");
    let conf = ServerConf {
        threads: args.threads.max(1),
        work_stealing: false,
        // Keep several instances on one machine out of each other's way.
        pid_file: format!("/tmp/bare-pingora-{port}.pid"),
        upgrade_sock: format!("/tmp/bare-pingora-{port}-upgrade.sock"),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut proxy = http_proxy_service(
        &server.configuration,
        Bare {
            upstream: args.upstream,
        },
    );
    proxy.add_tcp(&args.listen);
    server.add_service(proxy);

    eprintln!(
        "bare-pingora listening on http://{} -> {} threads={}",
        args.listen, args.upstream, args.threads
    );
    server.run_forever();
}

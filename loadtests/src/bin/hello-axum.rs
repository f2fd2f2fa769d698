//! `hello-axum`: the ceiling for `just bench`. A bare axum server answering
//! `hello` on every path, on the same HTTP stack (hyper, tokio) as the host,
//! with nothing else on the request path.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::Router;
use axum::http::header;
use axum::routing::any;
use clap::Parser;

#[derive(Parser)]
#[command(name = "hello-axum", version, about = "Answer `hello` to every request: the benchmark's ceiling")]
struct Cli {
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let app = Router::new().fallback(any(|| async { ([(header::CONTENT_TYPE, "text/plain")], "hello") }));
    let listener =
        tokio::net::TcpListener::bind(cli.listen).await.with_context(|| format!("cannot listen on {}", cli.listen))?;
    axum::serve(listener, app).await.context("server failed")
}

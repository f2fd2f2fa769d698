//! The host the targets run against, started once per process: the
//! reference app from the repository's `switchyard.toml`, plus a wasi-http
//! component and one component per world for uploads to replace, on a
//! SQLite file of its own, with delivery off and short request timeouts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use switchyard::config::Config;
use switchyard::server::AppState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Components the upload target replaces, each starting from its real
/// build: (name, world, build).
const UPLOAD_TARGETS: [(&str, &str, &str); 3] = [
    ("upload-handler", "handler", "hello.wasm"),
    ("upload-http", "wasi-http", "hello-http.wasm"),
    ("upload-connector", "connector", "connector-webhook.wasm"),
];

/// Added to the reference app's config.
const EXTRA: &str = r#"
[components.hello-http]
path = "components/build/hello-http.wasm"
world = "wasi-http"

[components.hello-http.reuse]
max_requests = 16

[[routes]]
method = "GET"
path = "/hello/{*rest}"
component = "hello-http"

[[routes]]
method = "POST"
path = "/echo"
component = "hello-http"
"#;

/// The name of every thread the host's runtime runs on.
pub const THREAD_NAME: &str = "fuzz-host";

pub struct UploadTarget {
    pub name: &'static str,
    pub bytes: Arc<[u8]>,
}

pub struct Host {
    pub runtime: tokio::runtime::Runtime,
    pub state: AppState,
    pub addr: SocketAddr,
    /// The repository root, which relative paths in configs resolve against.
    pub base_dir: PathBuf,
    pub upload_targets: Vec<UploadTarget>,
    _dir: tempfile::TempDir,
}

pub fn get() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| match start() {
        Ok(host) => host,
        Err(err) => panic!("the fuzz host cannot start (are the components built? `just components`): {err:#}"),
    })
}

fn start() -> anyhow::Result<Host> {
    let base_dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let builds = base_dir.join("components/build");
    let mut text = std::fs::read_to_string(base_dir.join("switchyard.toml"))?;
    text.push_str(EXTRA);
    for (name, world, build) in UPLOAD_TARGETS {
        text.push_str(&format!(
            "\n[components.{name}]\npath = \"components/build/{build}\"\nworld = \"{world}\"\n{}",
            if world == "handler" { "" } else { "allowed_hosts = [\"127.0.0.1:9\"]\n" }
        ));
    }
    let mut config = Config::parse(&text, base_dir.clone())?;
    let dir = tempfile::tempdir()?;
    config.database.url = format!("sqlite://{}", dir.path().join("fuzz.db").display());
    config.outbox.dispatch = false;
    config.server.request_timeout_ms = 2_000;
    config.server.header_read_timeout_ms = 1_000;
    config.server.drain_timeout_ms = 100;
    let upload_targets = UPLOAD_TARGETS
        .iter()
        .map(|(name, _, build)| Ok(UploadTarget { name, bytes: std::fs::read(builds.join(build))?.into() }))
        .collect::<anyhow::Result<_>>()?;

    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name(THREAD_NAME).enable_all().build()?;
    let (state, addr) = runtime.block_on(async {
        let state = switchyard::prepare(&config).await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let served = state.clone();
        tokio::spawn(async move {
            if let Err(err) = switchyard::serve(&config, served, listener, std::future::pending()).await {
                panic!("the fuzz host stopped serving: {err:#}");
            }
        });
        anyhow::Ok((state, addr))
    })?;
    Ok(Host { runtime, state, addr, base_dir, upload_targets, _dir: dir })
}

impl Host {
    /// The host still answers a well-behaved client.
    pub async fn assert_live(&self) {
        let probe = async {
            let mut stream = TcpStream::connect(self.addr).await?;
            stream.write_all(b"GET /health/live HTTP/1.1\r\nhost: fuzz\r\nconnection: close\r\n\r\n").await?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await?;
            std::io::Result::Ok(answer)
        };
        match tokio::time::timeout(Duration::from_secs(10), probe).await {
            Ok(Ok(answer)) if answer.starts_with(b"HTTP/1.1 200 ") => {}
            Ok(Ok(answer)) => panic!("the health probe got {:?}", String::from_utf8_lossy(&answer)),
            Ok(Err(err)) => panic!("the health probe failed: {err}"),
            Err(_) => panic!("the health probe got no answer within 10 s"),
        }
    }
}

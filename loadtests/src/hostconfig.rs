//! Derives a run's host config from the repository's `switchyard.toml`, so a
//! load test serves exactly the reference app, only moved: its own listen
//! port, a fresh SQLite file in the run's results directory, absolute
//! component paths (the generated file lives elsewhere), and connectors
//! pointed at the run's simulator instead of :9090.
//!
//! It edits the parsed TOML, never the text, and touches only those keys.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use toml::{Table, Value};

/// Where the run's host and simulator live.
#[derive(Debug, Clone)]
pub struct Placement<'a> {
    /// The host's listen address.
    pub listen: SocketAddr,
    /// The SQLite file to create (absolute).
    pub database: &'a Path,
    /// The simulator's delivery address.
    pub simulator: SocketAddr,
}

/// `source` (the text of a config file in `source_dir`) rewritten for `placement`.
pub fn rewrite(source: &str, source_dir: &Path, placement: &Placement<'_>) -> anyhow::Result<String> {
    let mut config: Table = source.parse().context("the source config is not valid TOML")?;

    let server = table_entry(&mut config, "server")?;
    server.insert("listen".into(), Value::String(placement.listen.to_string()));

    let database = table_entry(&mut config, "database")?;
    database.insert("url".into(), Value::String(format!("sqlite://{}", placement.database.display())));

    if let Some(Value::Table(components)) = config.get_mut("components") {
        for (name, component) in components.iter_mut() {
            let Value::Table(component) = component else {
                anyhow::bail!("[components.{name}] is not a table");
            };
            if let Some(Value::String(path)) = component.get_mut("path")
                && Path::new(path.as_str()).is_relative()
            {
                *path = source_dir.join(path.as_str()).display().to_string();
            }
            if component.contains_key("allowed_hosts") {
                let host = Value::String(placement.simulator.to_string());
                component.insert("allowed_hosts".into(), Value::Array(vec![host]));
            }
            if let Some(Value::Table(settings)) = component.get_mut("config")
                && let Some(Value::String(url)) = settings.get_mut("url")
            {
                *url = with_authority(url, placement.simulator);
            }
        }
    }
    toml::to_string(&config).context("cannot serialise the generated config")
}

/// The `[name]` table, created if absent.
fn table_entry<'a>(config: &'a mut Table, name: &str) -> anyhow::Result<&'a mut Table> {
    match config.entry(name).or_insert_with(|| Value::Table(Table::new())) {
        Value::Table(table) => Ok(table),
        _ => anyhow::bail!("[{name}] is not a table"),
    }
}

/// `url` with its host:port replaced: `http://127.0.0.1:9090/email` →
/// `http://127.0.0.1:P/email`.
fn with_authority(url: &str, authority: SocketAddr) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let path = rest.find('/').map_or("", |at| &rest[at..]);
    format!("{scheme}://{authority}{path}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    const SOURCE: &str = r#"
[server]
listen = "127.0.0.1:8080"
max_body_bytes = 65536

[database]
url = "sqlite://switchyard.db"

[components.order-handler]
path = "components/build/order-handler.wasm"

[components.connector-email]
path = "components/build/connector-email.wasm"
world = "connector"
allowed_hosts = ["127.0.0.1:9090"]
config = { url = "http://127.0.0.1:9090/email", timeout_ms = "1500" }
"#;

    #[test]
    fn moves_the_app_without_changing_it() {
        let placement = Placement {
            listen: "127.0.0.1:4100".parse().unwrap(),
            database: Path::new("/tmp/run/host.db"),
            simulator: "127.0.0.1:4200".parse().unwrap(),
        };
        let text = rewrite(SOURCE, Path::new("/repo"), &placement).unwrap();
        let config: Table = text.parse().unwrap();
        assert_eq!(config["server"]["listen"].as_str(), Some("127.0.0.1:4100"));
        assert_eq!(config["server"]["max_body_bytes"].as_integer(), Some(65536));
        assert_eq!(config["database"]["url"].as_str(), Some("sqlite:///tmp/run/host.db"));
        let components = &config["components"];
        assert_eq!(components["order-handler"]["path"].as_str(), Some("/repo/components/build/order-handler.wasm"));
        let email = &components["connector-email"];
        assert_eq!(email["allowed_hosts"].as_array().unwrap()[0].as_str(), Some("127.0.0.1:4200"));
        assert_eq!(email["config"]["url"].as_str(), Some("http://127.0.0.1:4200/email"));
        assert_eq!(email["config"]["timeout_ms"].as_str(), Some("1500"));
        assert!(components["order-handler"].get("allowed_hosts").is_none());
    }

    #[test]
    fn replaces_only_the_authority_of_a_url() {
        let at: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(with_authority("http://h:9/webhook/x?y", at), "http://127.0.0.1:1/webhook/x?y");
        assert_eq!(with_authority("http://h:9", at), "http://127.0.0.1:1");
        assert_eq!(with_authority("not a url", at), "not a url");
    }
}

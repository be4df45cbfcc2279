//! `serialsvc serve` configuration: a TOML file (`--config`), environment
//! variables (`SERIALSVC_<KEY>`) and flags (`--<key-with-dashes>`), each layer
//! overriding the one before: defaults < file < environment < flags.
//!
//! Every key has the same name in all three places (`pool_count_max` is
//! `--pool-count-max` and `SERIALSVC_POOL_COUNT_MAX`). Unknown keys in the file
//! are refused; every value is checked by [`Config::validate`], whose errors
//! name the key and the rule. `ops/config-template.toml` lists every key with
//! its default and meaning; a test keeps it complete.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Environment variable prefix of every key.
pub const ENV_PREFIX: &str = "SERIALSVC_";

/// Largest configuration file read, in bytes.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;

/// Log format on standard error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line, for log shippers.
    Json,
}

/// The effective configuration of `serialsvc serve`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// RocksDB data directory (created if missing).
    pub data_dir: PathBuf,
    /// gRPC listen address.
    pub grpc_listen: SocketAddr,
    /// HTTP listen address (`/healthz`, `/readyz`, the GS1 verification responder).
    pub http_listen: SocketAddr,
    /// Prometheus metrics listen address (`/metrics`).
    pub metrics_listen: SocketAddr,
    /// Seconds in-flight requests may run after SIGINT/SIGTERM (0..=3600).
    pub shutdown_grace_seconds: u64,
    /// Seconds a gRPC handler may take to answer (1..=3600); a slower one is
    /// answered CANCELLED while its work goes on (retry with the request id).
    pub request_timeout_seconds: u64,
    /// Shard writers (1..=256); a GTIN always belongs to the same shard.
    pub shards: u16,
    /// Commands queued per shard before callers get RESOURCE_EXHAUSTED (1..=1,000,000).
    pub queue_depth: usize,
    /// Largest count of one pool request (1..=10,000,000).
    pub pool_count_max: u64,
    /// Largest commissioning, decommission or undo group (1..=100,000).
    pub commission_group_max: usize,
    /// Largest return group (1..=100,000).
    pub return_group_max: usize,
    /// This responder's GLN (13 digits with check digit) or empty.
    pub responder_gln: String,
    /// Log format: `text` or `json`.
    pub log_format: LogFormat,
    /// TLS certificate chain (PEM) of every listener; empty = plain text.
    pub tls_cert: PathBuf,
    /// TLS private key (PEM) matching `tls_cert`.
    pub tls_key: PathBuf,
    /// CA certificates (PEM) that sign client certificates: when set, every
    /// client must present one (mutual TLS); empty = none asked for.
    pub tls_client_ca: PathBuf,
    /// Allow listening on a non-loopback address without TLS (logged as a
    /// warning); refused otherwise.
    pub insecure: bool,
    /// Packs one principal (token) may verify per second, gRPC and HTTP
    /// together (0 = no limit; 0..=100,000,000); bursts up to one second's worth.
    pub verify_rate_per_principal: u32,
    /// Window (seconds, 1..=86,400) over which each principal's share of
    /// unknown-serial lookups is measured.
    pub enumeration_window_seconds: u64,
    /// Lookups a principal makes in a window before its share is judged (1..=1,000,000,000).
    pub enumeration_min_lookups: u64,
    /// Share of unknown serials (percent, 1..=100) that counts as enumeration:
    /// a metric, a warning and, if configured, a block.
    pub enumeration_unknown_percent: u8,
    /// Seconds a principal caught enumerating is refused verification
    /// (0 = only reported; 0..=86,400).
    pub enumeration_block_seconds: u64,
    /// Seconds without a commit after which the memtables are flushed to
    /// table files and the block cache emptied, giving their memory back
    /// (0 = never; 0..=86,400).
    pub idle_flush_seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        let issuer = issuer::IssuerConfig::default();
        Config {
            data_dir: PathBuf::from("data"),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            shutdown_grace_seconds: 30,
            request_timeout_seconds: 300,
            shards: 4,
            queue_depth: issuer.queue_depth,
            pool_count_max: issuer.pool_count_max,
            commission_group_max: issuer.commission_group_max,
            return_group_max: issuer.return_group_max,
            responder_gln: String::new(),
            log_format: LogFormat::Text,
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            tls_client_ca: PathBuf::new(),
            insecure: false,
            verify_rate_per_principal: 0,
            enumeration_window_seconds: 60,
            enumeration_min_lookups: 1000,
            enumeration_unknown_percent: 50,
            enumeration_block_seconds: 0,
            idle_flush_seconds: 10,
        }
    }
}

/// A configuration that cannot be used; the message names the key and the rule.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these keys (unknown key, wrong type).
    #[error("configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the key.
        message: String,
    },
    /// A value breaks its rule.
    #[error("{key}: {rule}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// The rule broken and the value given.
        rule: String,
    },
}

fn invalid(key: &'static str, rule: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        rule: rule.into(),
    }
}

fn check_range<T: PartialOrd + std::fmt::Display>(
    key: &'static str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(invalid(key, format!("{value} is outside {min}..={max}")));
    }
    Ok(())
}

impl Config {
    /// Parses a configuration file's text (keys not given keep their defaults).
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: error.to_string().trim_end().to_owned(),
        })
    }

    /// Reads and parses a configuration file (at most [`CONFIG_FILE_BYTES_MAX`] bytes).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let read = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read)?.len();
        if size > CONFIG_FILE_BYTES_MAX {
            return Err(ConfigError::Parse {
                path: path.to_path_buf(),
                message: format!(
                    "{size} bytes; a configuration file holds at most {CONFIG_FILE_BYTES_MAX}"
                ),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Self::from_toml(&text, path)
    }

    /// Checks every value; the error names the key and the rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        check_range(
            "shutdown_grace_seconds",
            self.shutdown_grace_seconds,
            0,
            3600,
        )?;
        check_range(
            "request_timeout_seconds",
            self.request_timeout_seconds,
            1,
            3600,
        )?;
        check_range("shards", self.shards, 1, 256)?;
        check_range("queue_depth", self.queue_depth, 1, 1_000_000)?;
        check_range("pool_count_max", self.pool_count_max, 1, 10_000_000)?;
        check_range(
            "commission_group_max",
            self.commission_group_max,
            1,
            100_000,
        )?;
        check_range("return_group_max", self.return_group_max, 1, 100_000)?;
        check_range(
            "verify_rate_per_principal",
            self.verify_rate_per_principal,
            0,
            100_000_000,
        )?;
        check_range("idle_flush_seconds", self.idle_flush_seconds, 0, 86_400)?;
        check_range(
            "enumeration_window_seconds",
            self.enumeration_window_seconds,
            1,
            86_400,
        )?;
        check_range(
            "enumeration_min_lookups",
            self.enumeration_min_lookups,
            1,
            1_000_000_000,
        )?;
        check_range(
            "enumeration_unknown_percent",
            self.enumeration_unknown_percent,
            1,
            100,
        )?;
        check_range(
            "enumeration_block_seconds",
            self.enumeration_block_seconds,
            0,
            86_400,
        )?;
        let listeners = [
            ("grpc_listen", self.grpc_listen),
            ("http_listen", self.http_listen),
            ("metrics_listen", self.metrics_listen),
        ];
        for (index, (key, address)) in listeners.iter().enumerate() {
            for (other_key, other) in &listeners[..index] {
                if address.port() != 0 && address == other {
                    return Err(invalid(
                        key,
                        format!(
                            "{address} is already the {other_key} address; each listener needs its own"
                        ),
                    ));
                }
            }
        }
        if !self.responder_gln.is_empty() {
            crate::check_gln("responder_gln", &self.responder_gln)
                .map_err(|rule| invalid("responder_gln", rule))?;
        }
        let (cert, key) = (
            self.tls_cert.as_os_str().is_empty(),
            self.tls_key.as_os_str().is_empty(),
        );
        if cert != key {
            return Err(invalid(
                if cert { "tls_cert" } else { "tls_key" },
                "tls_cert and tls_key are given together or not at all",
            ));
        }
        if cert && !self.tls_client_ca.as_os_str().is_empty() {
            return Err(invalid(
                "tls_client_ca",
                "client certificates need TLS: give tls_cert and tls_key too",
            ));
        }
        if cert && !self.insecure {
            for (key, address) in listeners {
                if !address.ip().is_loopback() {
                    return Err(invalid(
                        key,
                        format!(
                            "{address} is not a loopback address: serving plain text on a network is refused; \
                             give tls_cert and tls_key, or set insecure = true (--insecure) to accept the risk"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The TLS files, when TLS is configured.
    pub fn tls_files(&self) -> Option<crate::TlsFiles> {
        if self.tls_cert.as_os_str().is_empty() {
            return None;
        }
        Some(crate::TlsFiles {
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            client_ca: (!self.tls_client_ca.as_os_str().is_empty())
                .then(|| self.tls_client_ca.clone()),
        })
    }

    /// The configuration as TOML (what `serialsvc check-config` prints).
    pub fn to_toml(&self) -> String {
        // Every field is a plain string, number or address: serialising cannot fail.
        toml::to_string(self).unwrap_or_else(|error| format!("# cannot render: {error}\n"))
    }

    /// What [`crate::run`] needs.
    pub fn serve_config(&self) -> crate::ServeConfig {
        crate::ServeConfig {
            data_dir: self.data_dir.clone(),
            grpc_listen: self.grpc_listen,
            http_listen: self.http_listen,
            metrics_listen: self.metrics_listen,
            shutdown_grace: Duration::from_secs(self.shutdown_grace_seconds),
            request_timeout: Duration::from_secs(self.request_timeout_seconds),
            idle_flush: Duration::from_secs(self.idle_flush_seconds),
            issuer: issuer::IssuerConfig {
                shards: usize::from(self.shards),
                queue_depth: self.queue_depth,
                pool_count_max: self.pool_count_max,
                commission_group_max: self.commission_group_max,
                return_group_max: self.return_group_max,
                ..issuer::IssuerConfig::default()
            },
            responder_gln: self.responder_gln.clone(),
            tls: self.tls_files(),
            insecure: self.insecure,
            verify_limits: crate::VerifyLimits {
                rate_per_second: self.verify_rate_per_principal,
                window: Duration::from_secs(self.enumeration_window_seconds),
                min_lookups: self.enumeration_min_lookups,
                unknown_percent: self.enumeration_unknown_percent,
                block: Duration::from_secs(self.enumeration_block_seconds),
            },
        }
    }
}

/// Flags and environment variables of `serialsvc serve`: every key of
/// [`Config`], each optional so that an unset one falls through to the file
/// and then to the default.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Overrides {
    /// TOML configuration file (keys as in ops/config-template.toml).
    #[arg(long, env = "SERIALSVC_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// RocksDB data directory, created if missing [default: data].
    #[arg(long, env = "SERIALSVC_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long, env = "SERIALSVC_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,
    /// HTTP listen address (/healthz, /readyz, GS1 verification responder) [default: 127.0.0.1:8080].
    #[arg(long, env = "SERIALSVC_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Prometheus metrics listen address (/metrics) [default: 127.0.0.1:9464].
    #[arg(long, env = "SERIALSVC_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Seconds in-flight requests may run after SIGINT/SIGTERM, 0..=3600 [default: 30].
    #[arg(long, env = "SERIALSVC_SHUTDOWN_GRACE_SECONDS")]
    pub shutdown_grace_seconds: Option<u64>,
    /// Seconds a gRPC handler may take to answer before CANCELLED, 1..=3600 [default: 300].
    #[arg(long, env = "SERIALSVC_REQUEST_TIMEOUT_SECONDS")]
    pub request_timeout_seconds: Option<u64>,
    /// Shard writers, 1..=256; a GTIN always belongs to the same shard [default: 4].
    #[arg(long, env = "SERIALSVC_SHARDS")]
    pub shards: Option<u16>,
    /// Commands queued per shard before RESOURCE_EXHAUSTED, 1..=1000000 [default: 1024].
    #[arg(long, env = "SERIALSVC_QUEUE_DEPTH")]
    pub queue_depth: Option<usize>,
    /// Largest count of one pool request (OPEN-SCS MaxSNRequestable), 1..=10000000 [default: 1000000].
    #[arg(long, env = "SERIALSVC_POOL_COUNT_MAX")]
    pub pool_count_max: Option<u64>,
    /// Largest commissioning, decommission or undo group, 1..=100000 [default: 10000].
    #[arg(long, env = "SERIALSVC_COMMISSION_GROUP_MAX")]
    pub commission_group_max: Option<usize>,
    /// Largest return group (OPEN-SCS MaxSNReturnable), 1..=100000 [default: 10000].
    #[arg(long, env = "SERIALSVC_RETURN_GROUP_MAX")]
    pub return_group_max: Option<usize>,
    /// This responder's GLN (13 digits with check digit), sent as
    /// `responderGLN` in GS1 Lightweight Verification Messaging answers [default: none].
    #[arg(long, env = "SERIALSVC_RESPONDER_GLN")]
    pub responder_gln: Option<String>,
    /// Log format on standard error [default: text].
    #[arg(long, value_enum, env = "SERIALSVC_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// TLS certificate chain (PEM) for every listener [default: none, plain text].
    #[arg(long, env = "SERIALSVC_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) matching --tls-cert.
    #[arg(long, env = "SERIALSVC_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that sign client certificates: mutual TLS [default: none].
    #[arg(long, env = "SERIALSVC_TLS_CLIENT_CA", value_name = "PEM")]
    pub tls_client_ca: Option<PathBuf>,
    /// Allow plain text on a non-loopback address (logged as a warning).
    #[arg(long, env = "SERIALSVC_INSECURE", num_args = 0..=1, default_missing_value = "true")]
    pub insecure: Option<bool>,
    /// Packs one token may verify per second, 0 = no limit, 0..=100000000 [default: 0].
    #[arg(long, env = "SERIALSVC_VERIFY_RATE_PER_PRINCIPAL")]
    pub verify_rate_per_principal: Option<u32>,
    /// Window of the unknown-serial share per token, seconds, 1..=86400 [default: 60].
    #[arg(long, env = "SERIALSVC_ENUMERATION_WINDOW_SECONDS")]
    pub enumeration_window_seconds: Option<u64>,
    /// Lookups in a window before a token's unknown share is judged, 1..=1000000000 [default: 1000].
    #[arg(long, env = "SERIALSVC_ENUMERATION_MIN_LOOKUPS")]
    pub enumeration_min_lookups: Option<u64>,
    /// Unknown-serial share (percent) that counts as enumeration, 1..=100 [default: 50].
    #[arg(long, env = "SERIALSVC_ENUMERATION_UNKNOWN_PERCENT")]
    pub enumeration_unknown_percent: Option<u8>,
    /// Seconds a token caught enumerating is refused verification, 0 = only reported, 0..=86400 [default: 0].
    #[arg(long, env = "SERIALSVC_ENUMERATION_BLOCK_SECONDS")]
    pub enumeration_block_seconds: Option<u64>,
    /// Seconds without a commit before the memtables are flushed, 0 = never, 0..=86400 [default: 10].
    #[arg(long, env = "SERIALSVC_IDLE_FLUSH_SECONDS")]
    pub idle_flush_seconds: Option<u64>,
}

impl Overrides {
    /// Layers the file (if `--config` was given), then these flags and
    /// environment variables, over the defaults, and validates the result.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let base = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        let config = self.apply(base);
        config.validate()?;
        Ok(config)
    }

    /// `config` with every value given here replacing the file's or default one.
    pub fn apply(&self, mut config: Config) -> Config {
        fn set<T: Clone>(slot: &mut T, value: &Option<T>) {
            if let Some(value) = value {
                *slot = value.clone();
            }
        }
        set(&mut config.data_dir, &self.data_dir);
        set(&mut config.grpc_listen, &self.grpc_listen);
        set(&mut config.http_listen, &self.http_listen);
        set(&mut config.metrics_listen, &self.metrics_listen);
        set(
            &mut config.shutdown_grace_seconds,
            &self.shutdown_grace_seconds,
        );
        set(
            &mut config.request_timeout_seconds,
            &self.request_timeout_seconds,
        );
        set(&mut config.shards, &self.shards);
        set(&mut config.queue_depth, &self.queue_depth);
        set(&mut config.pool_count_max, &self.pool_count_max);
        set(&mut config.commission_group_max, &self.commission_group_max);
        set(&mut config.return_group_max, &self.return_group_max);
        set(&mut config.responder_gln, &self.responder_gln);
        set(&mut config.log_format, &self.log_format);
        set(&mut config.tls_cert, &self.tls_cert);
        set(&mut config.tls_key, &self.tls_key);
        set(&mut config.tls_client_ca, &self.tls_client_ca);
        set(&mut config.insecure, &self.insecure);
        set(
            &mut config.verify_rate_per_principal,
            &self.verify_rate_per_principal,
        );
        set(
            &mut config.enumeration_window_seconds,
            &self.enumeration_window_seconds,
        );
        set(&mut config.idle_flush_seconds, &self.idle_flush_seconds);
        set(
            &mut config.enumeration_min_lookups,
            &self.enumeration_min_lookups,
        );
        set(
            &mut config.enumeration_unknown_percent,
            &self.enumeration_unknown_percent,
        );
        set(
            &mut config.enumeration_block_seconds,
            &self.enumeration_block_seconds,
        );
        config
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    const TEMPLATE_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../ops/config-template.toml");

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        overrides: Overrides,
    }

    fn keys_of(config: &Config) -> Vec<String> {
        let table: toml::Table = toml::from_str(&config.to_toml()).expect("render parses");
        table.keys().cloned().collect()
    }

    #[test]
    fn the_template_parses_to_the_defaults() {
        let config = Config::from_file(Path::new(TEMPLATE_PATH)).expect("template parses");
        assert_eq!(config, Config::default());
    }

    #[test]
    fn the_template_sets_and_explains_every_key() {
        let text = std::fs::read_to_string(TEMPLATE_PATH).expect("read template");
        let template: toml::Table = toml::from_str(&text).expect("template is TOML");
        let lines: Vec<&str> = text.lines().collect();
        for key in keys_of(&Config::default()) {
            assert!(
                template.contains_key(&key),
                "{key} missing from the template"
            );
            let at = lines
                .iter()
                .position(|line| line.starts_with(&format!("{key} =")))
                .unwrap_or_else(|| panic!("{key} is not set on a line of its own"));
            assert!(
                at > 0 && lines[at - 1].starts_with('#'),
                "{key} has no comment above it explaining it"
            );
        }
        assert_eq!(template.len(), keys_of(&Config::default()).len());
    }

    #[test]
    fn every_key_has_a_flag_and_an_environment_variable() {
        let command = Cli::command();
        for key in keys_of(&Config::default()) {
            let argument = command
                .get_arguments()
                .find(|a| a.get_id().as_str() == key)
                .unwrap_or_else(|| panic!("no flag for {key}"));
            assert_eq!(argument.get_long(), Some(key.replace('_', "-").as_str()));
            assert_eq!(
                argument.get_env().and_then(|e| e.to_str()),
                Some(format!("{ENV_PREFIX}{}", key.to_uppercase()).as_str())
            );
        }
    }

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let file =
            Config::from_toml("shards = 8\nqueue_depth = 7\n", Path::new("f.toml")).expect("parse");
        assert_eq!(file.shards, 8);
        assert_eq!(file.pool_count_max, Config::default().pool_count_max);
        let cli = Cli::try_parse_from(["serve", "--shards", "16"]).expect("flags");
        let config = cli.overrides.apply(file);
        assert_eq!(config.shards, 16, "flag beats file");
        assert_eq!(config.queue_depth, 7, "file beats default");
        assert_eq!(config.grpc_listen, Config::default().grpc_listen);
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused_naming_the_key() {
        let check = |text: &str, expected: &str| {
            let error = Config::from_toml(text, Path::new("f.toml")).expect_err(text);
            let message = error.to_string();
            assert!(message.contains(expected), "{text:?} gave {message:?}");
        };
        check("shard = 4\n", "unknown field `shard`");
        check("shards = \"four\"\n", "shards");
        check("grpc_listen = \"localhost\"\n", "grpc_listen");
        check("log_format = \"xml\"\n", "log_format");
        check("[server]\nshards = 4\n", "unknown field `server`");
    }

    #[test]
    fn validation_names_the_key_and_the_rule() {
        let check = |change: fn(&mut Config), expected: &str| {
            let mut config = Config::default();
            change(&mut config);
            let error = config.validate().expect_err(expected).to_string();
            assert_eq!(error, expected);
        };
        check(|c| c.shards = 0, "shards: 0 is outside 1..=256");
        check(|c| c.shards = 257, "shards: 257 is outside 1..=256");
        check(
            |c| c.queue_depth = 0,
            "queue_depth: 0 is outside 1..=1000000",
        );
        check(
            |c| c.pool_count_max = 10_000_001,
            "pool_count_max: 10000001 is outside 1..=10000000",
        );
        check(
            |c| c.commission_group_max = 0,
            "commission_group_max: 0 is outside 1..=100000",
        );
        check(
            |c| c.return_group_max = 100_001,
            "return_group_max: 100001 is outside 1..=100000",
        );
        check(
            |c| c.shutdown_grace_seconds = 3601,
            "shutdown_grace_seconds: 3601 is outside 0..=3600",
        );
        check(
            |c| c.data_dir = PathBuf::new(),
            "data_dir: must not be empty",
        );
        check(
            |c| c.metrics_listen = c.http_listen,
            "metrics_listen: 127.0.0.1:8080 is already the http_listen address; each listener needs its own",
        );
        let mut config = Config {
            responder_gln: "1234567890123".to_owned(),
            ..Config::default()
        };
        let error = config.validate().expect_err("bad check digit").to_string();
        assert!(error.starts_with("responder_gln: "), "{error}");
        config.responder_gln = "9506000134352".to_owned();
        config
            .validate()
            .expect("a GLN with a right check digit passes");
        Config::default().validate().expect("defaults are valid");
        let any_port: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let ephemeral = Config {
            grpc_listen: any_port,
            http_listen: any_port,
            metrics_listen: any_port,
            ..Config::default()
        };
        ephemeral.validate().expect("port 0 may repeat");
    }

    #[test]
    fn the_rendered_config_reads_back() {
        let config = Config {
            shards: 9,
            log_format: LogFormat::Json,
            ..Config::default()
        };
        let again = Config::from_toml(&config.to_toml(), Path::new("x")).expect("parse");
        assert_eq!(again, config);
    }
}

//! The web config file (`http.web_config_file`), in the format of Prometheus'
//! exporter-toolkit (`--web.config.file`) so ops teams can reuse the file they have:
//! `tls_server_config` (`cert_file`, `key_file`, optional `client_ca_file` +
//! `client_auth_type`, `min_version`) and `basic_auth_users` (user → bcrypt hash).
//! Paths are relative to the file's directory, as in exporter-toolkit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use vadvisor_api::PluginOptions;

use crate::config::{ConfigErrors, Diagnostic};
use crate::yaml;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    pub tls_server_config: Option<TlsServerConfig>,
    pub basic_auth_users: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsServerConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// `NoClientCert` (default) or `RequireAndVerifyClientCert`.
    pub client_auth_type: ClientAuth,
    pub client_ca_file: Option<PathBuf>,
    /// `TLS12` (default) or `TLS13`.
    pub min_version: TlsVersion,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
pub enum ClientAuth {
    #[default]
    NoClientCert,
    RequireAndVerifyClientCert,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
pub enum TlsVersion {
    #[default]
    TLS12,
    TLS13,
}

/// Loads and checks a web config file; every problem is located.
pub fn load(path: &Path) -> Result<WebConfig, ConfigErrors> {
    let file = path.display().to_string();
    let fail = |position, path: String, message: String| ConfigErrors {
        file: file.clone(),
        diagnostics: vec![Diagnostic {
            position,
            path,
            message,
        }],
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        fail(
            Default::default(),
            String::new(),
            format!("cannot read the web config file: {e}"),
        )
    })?;
    let (value, locations, _) =
        yaml::parse(&text).map_err(|e| fail(e.position, String::new(), e.message))?;
    let mut config: WebConfig =
        PluginOptions::new(value)
            .decode_all()
            .map_err(|errors| ConfigErrors {
                file: file.clone(),
                diagnostics: errors
                    .into_iter()
                    .map(|e| {
                        let position = if e.message.starts_with("unknown field") {
                            locations.key(&e.path)
                        } else {
                            locations.value(&e.path)
                        };
                        Diagnostic {
                            position,
                            path: e.path.join("."),
                            message: e.message,
                        }
                    })
                    .collect(),
            })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut diags = Vec::new();
    if let Some(tls) = &mut config.tls_server_config {
        for (key, p) in [
            ("cert_file", &mut tls.cert_file),
            ("key_file", &mut tls.key_file),
        ] {
            let at = vec!["tls_server_config".to_string(), key.to_string()];
            if p.as_os_str().is_empty() {
                diags.push(Diagnostic {
                    position: locations.key(&at),
                    path: at.join("."),
                    message: "is required".into(),
                });
            } else if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(ca) = &mut tls.client_ca_file {
            if ca.is_relative() {
                *ca = base.join(&*ca);
            }
        }
        if tls.client_auth_type == ClientAuth::RequireAndVerifyClientCert
            && tls.client_ca_file.is_none()
        {
            let at = vec![
                "tls_server_config".to_string(),
                "client_auth_type".to_string(),
            ];
            diags.push(Diagnostic {
                position: locations.value(&at),
                path: at.join("."),
                message: "RequireAndVerifyClientCert needs client_ca_file".into(),
            });
        }
    }
    for (user, hash) in &config.basic_auth_users {
        if let Err(message) = crate::auth::check_hash(hash) {
            let at = vec!["basic_auth_users".to_string(), user.clone()];
            diags.push(Diagnostic {
                position: locations.value(&at),
                path: at.join("."),
                message,
            });
        }
    }
    if diags.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors {
            file,
            diagnostics: diags,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn loads_exporter_toolkit_format_with_relative_paths() {
        let f = write("tls_server_config:\n  cert_file: server.crt\n  key_file: /abs/server.key\nbasic_auth_users:\n  alice: $2y$10$abcdefghijklmnopqrstuu5/mXKVyVzWcyANdbrKqvPVqQS33yy1K\n");
        let c = load(f.path()).unwrap();
        let tls = c.tls_server_config.unwrap();
        assert_eq!(tls.cert_file, f.path().parent().unwrap().join("server.crt"));
        assert_eq!(tls.key_file, PathBuf::from("/abs/server.key"));
        assert_eq!(c.basic_auth_users.len(), 1);
    }

    #[test]
    fn reports_located_errors() {
        let f = write("tls_server_config:\n  cert_fil: x\nbasic_auth_users:\n  bob: plaintext\n");
        let err = load(f.path()).unwrap_err().to_string();
        assert!(
            err.contains(
                ":2:3: tls_server_config.cert_fil: unknown field `cert_fil`, expected one of"
            ),
            "{err}"
        );
        let f = write("basic_auth_users:\n  bob: plaintext\n");
        let err = load(f.path()).unwrap_err().to_string();
        assert!(
            err.contains(":2:8: basic_auth_users.bob: expected a bcrypt hash"),
            "{err}"
        );
        // Right prefix, wrong shape: truncated, bad cost, bad alphabet.
        let f = write("basic_auth_users:\n  a: $2y$10$abc\n  b: $2y$77$abcdefghijklmnopqrstuu5/mXKVyVzWcyANdbrKqvPVqQS33yy1K\n  c: $2y$10$abcdefghijklmnopqrstuu5/mXKVyVzWcyANdbrKqvPVqQS33yy1!\n");
        let err = load(f.path()).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.diagnostics.len(), 3, "{text}");
        assert!(
            text.contains(":2:6: basic_auth_users.a: the salt and hash part has 3 characters"),
            "{text}"
        );
        assert!(
            text.contains(":3:6: basic_auth_users.b: invalid bcrypt cost `77`"),
            "{text}"
        );
        assert!(
            text.contains(":4:6: basic_auth_users.c: the salt and hash part"),
            "{text}"
        );
    }
}

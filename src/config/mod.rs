//! Loading a config file: parse (strict, with key paths), then compile it
//! into the runtime [`Gateway`]. Start-up, `check`
//! and every reload go through [`load`], so they accept and refuse exactly
//! the same files.

pub mod compile;
pub mod schema;
pub mod units;

use crate::gateway::Gateway;
use std::fmt;
use std::path::Path;

/// One problem in a config file: where (the key path, and the YAML line
/// when the parser knows it) and what.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one file, each printed as `FILE: key.path: message`.
#[derive(Debug)]
pub struct ConfigErrors {
    pub file: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {}", self.file, e)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Parse YAML text strictly. Unknown keys, wrong types and bad units are
/// errors carrying the key path (`routes[1].upstream`) and the line.
pub fn parse(text: &str) -> Result<schema::Config, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let mut msg = e.into_inner().to_string();
        // serde_yaml prefixes its own (shorter) path; ours already says where.
        if let Some((head, rest)) = msg.split_once(": ") {
            if !head.contains(' ') && path.starts_with(head) {
                msg = rest.to_string();
            }
        }
        ConfigError::new(path, msg)
    })
}

/// Read, parse and compile `file`. `previous` is the gateway serving now, if
/// any: state that must survive a reload (rate-limit zones whose definition
/// did not change, in-flight counters) is carried over from it.
pub fn load(file: &Path, previous: Option<&Gateway>) -> Result<Gateway, ConfigErrors> {
    let name = file.display().to_string();
    let fail = |errors| ConfigErrors {
        file: name.clone(),
        errors,
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| fail(vec![ConfigError::new("", format!("cannot read: {e}"))]))?;
    load_str(&text, file, previous).map_err(|e| fail(e.errors))
}

/// Like [`load`], for a config held in memory (the demo's embedded one).
pub fn load_str(
    text: &str,
    file: &Path,
    previous: Option<&Gateway>,
) -> Result<Gateway, ConfigErrors> {
    let name = file.display().to_string();
    let cfg = parse(text).map_err(|e| ConfigErrors {
        file: name.clone(),
        errors: vec![e],
    })?;
    compile::compile(cfg, file, previous).map_err(|errors| ConfigErrors { file: name, errors })
}

//! Layering: the TOML file's values, then the `ORDERMQ_*` variables, each
//! applied to the defaults through the table's parsers.
//!
//! Why strict: an unknown key or variable is an error, because a typo must
//! not silently fall back to a default in production; the error suggests the
//! nearest key. Two kinds of `ORDERMQ_*` variable are not keys and are
//! skipped: `ORDERMQ_CONFIG` (the file's path, read by the caller) and
//! `ORDERMQ_TEST_*` (the project's own test settings, such as
//! `ORDERMQ_TEST_POSTGRES_URL`, which a developer's shell exports).

use std::collections::HashMap;
use std::path::Path;

use super::table::{Key, Raw};
use super::{BadValue, Config, ConfigError, KEYS, Origin};

/// The prefix of every variable ordermq reads.
pub const ENV_PREFIX: &str = "ORDERMQ_";
/// Variables under this prefix are the tests' settings, not configuration.
pub const TEST_ENV_PREFIX: &str = "ORDERMQ_TEST_";
/// The variable naming the configuration file.
pub const CONFIG_FILE_VAR: &str = "ORDERMQ_CONFIG";

/// Applies the TOML file at `path` to `config`.
pub(super) fn apply_file(config: &mut Config, path: &Path) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })?;
    apply_table(config, &table, &Origin::File(path.to_owned()))
}

/// Applies a parsed TOML table (sections flattened to dotted names).
pub(super) fn apply_table(
    config: &mut Config,
    table: &toml::Table,
    origin: &Origin,
) -> Result<(), ConfigError> {
    let mut entries = Vec::new();
    flatten("", table, &mut entries);
    let mut seen: HashMap<&'static str, String> = HashMap::new();
    for (name, value) in entries {
        let key = KEYS
            .iter()
            .find(|k| k.is_named(&name))
            .ok_or_else(|| unknown(&name, origin, |k| [Some(k.name), k.alias]))?;
        if let Some(first) = seen.insert(key.name, name.clone()) {
            return Err(ConfigError::Twice {
                key: key.name,
                first,
                second: name,
                origin: origin.clone(),
            });
        }
        set(
            config,
            key,
            Raw::Toml(&value),
            origin,
            &name,
            &shown(&value),
        )?;
    }
    Ok(())
}

/// Applies every `ORDERMQ_*` variable of `env` that is a key.
pub(super) fn apply_env(
    config: &mut Config,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (var, value) in env {
        if !var.starts_with(ENV_PREFIX)
            || var == CONFIG_FILE_VAR
            || var.starts_with(TEST_ENV_PREFIX)
        {
            continue;
        }
        let key = KEYS
            .iter()
            .find(|k| k.env_var() == var)
            .ok_or_else(|| unknown(&var, &Origin::Environment, |k| [Some(k.env_var()), None]))?;
        set(
            config,
            key,
            Raw::Env(&value),
            &Origin::Environment,
            &var,
            &format!("{value:?}"),
        )?;
    }
    Ok(())
}

fn set(
    config: &mut Config,
    key: &'static Key,
    raw: Raw<'_>,
    origin: &Origin,
    given: &str,
    value: &str,
) -> Result<(), ConfigError> {
    (key.set)(config, raw).map_err(|reason| {
        ConfigError::BadValue(Box::new(BadValue {
            key: key.name,
            given: given.to_owned(),
            var: key.env_var(),
            origin: origin.clone(),
            // A secret is not echoed, even when it does not parse (and a secret
            // form's reasons never quote the value).
            value: if key.secret {
                super::secret::REDACTED.to_owned()
            } else {
                value.to_owned()
            },
            reason,
            accepted: key.accepted(),
        }))
    })
}

/// A TOML value as an error quotes it.
fn shown(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => format!("{text:?}"),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(x) => x.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => format!("(a TOML {})", other.type_str()),
    }
}

/// Flattens `[a.b] c = 1` into `("a.b.c", 1)`. A table whose name is not a
/// section of the key table is kept whole (and refused as unknown).
fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
    for (name, value) in table {
        let name = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            toml::Value::Table(inner) if is_section(&name) => flatten(&name, inner, out),
            _ => out.push((name, value.clone())),
        }
    }
}

fn is_section(name: &str) -> bool {
    KEYS.iter().any(|k| {
        k.name
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// The unknown-key error, suggesting the nearest of the names `names` gives.
fn unknown<N: AsRef<str>>(
    given: &str,
    origin: &Origin,
    names: impl Fn(&Key) -> [Option<N>; 2],
) -> ConfigError {
    let lower = given.to_ascii_lowercase();
    let suggestion = KEYS
        .iter()
        .flat_map(|k| names(k).into_iter().flatten())
        .map(|name| {
            let distance = edit_distance(&lower, &name.as_ref().to_ascii_lowercase());
            (distance, name.as_ref().to_owned())
        })
        .min()
        .filter(|(distance, _)| *distance <= 3)
        .map(|(_, name)| name);
    ConfigError::UnknownKey {
        given: given.to_owned(),
        origin: origin.clone(),
        suggestion,
    }
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::edit_distance;

    #[test]
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(edit_distance("http_adrr", "http_addr"), 1);
        assert_eq!(edit_distance("http_adr", "http_addr"), 1);
        assert_eq!(edit_distance("databse_url", "database_url"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}

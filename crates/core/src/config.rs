//! Config loading shared by every binary: defaults, then an optional TOML
//! file, then `WRITEBACK_<SERVICE>_…` environment variables (nested keys
//! split on `__`). Secrets are never config values: config names a `*_file`
//! and the service reads the secret from it. `WRITEBACK_<SERVICE>_CONFIG`
//! names the file itself (each binary's `--config`), so it is not a key.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Loads `T` for the service whose environment prefix is `env_prefix`
/// (e.g. `"WRITEBACK_RELAY_"`).
pub fn load<T>(file: Option<&Path>, env_prefix: &str) -> Result<T, Box<figment::Error>>
where
    T: DeserializeOwned + Serialize + Default,
{
    figment::<T>(file, env_prefix).extract().map_err(Box::new)
}

/// The figment behind [`load`], for callers that merge CLI flags on top.
pub fn figment<T: Serialize + Default>(file: Option<&Path>, env_prefix: &str) -> Figment {
    let mut f = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        f = f.merge(Toml::file_exact(path));
    }
    f.merge(
        Env::prefixed(env_prefix)
            .ignore(&[CONFIG_FILE_VAR])
            .split("__"),
    )
}

/// The variable (after the service's prefix) that names the config file.
const CONFIG_FILE_VAR: &str = "CONFIG";

#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Demo {
        listen: String,
        nested: Nested,
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Nested {
        port: u16,
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("demo.toml", "listen = \"file\"\n[nested]\nport = 1\n")?;
            jail.set_env("WRITEBACK_DEMO_NESTED__PORT", "7");
            let d: Demo =
                load(Some(Path::new("demo.toml")), "WRITEBACK_DEMO_").map_err(|e| e.to_string())?;
            assert_eq!(d.listen, "file");
            assert_eq!(d.nested.port, 7);
            Ok(())
        });
    }

    #[test]
    fn the_config_file_variable_is_not_a_key() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("demo.toml", "listen = \"file\"\n")?;
            jail.set_env("WRITEBACK_DEMO_CONFIG", "demo.toml");
            let d: Demo =
                load(Some(Path::new("demo.toml")), "WRITEBACK_DEMO_").map_err(|e| e.to_string())?;
            assert_eq!(d.listen, "file");
            Ok(())
        });
    }

    #[test]
    fn unknown_fields_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("demo.toml", "lisen = \"typo\"\n")?;
            let r: Result<Demo, _> = load(Some(Path::new("demo.toml")), "WRITEBACK_DEMO_");
            assert!(r.is_err());
            Ok(())
        });
    }
}

//! A policy on disk into bundle layers.
//!
//! The policy is validated first (as `sluice check` would read it). Its modules and granted
//! files become layers titled with their path in the bundle: a path inside the policy's
//! directory keeps its relative path; one outside it (`../filters/out/x.wasm`,
//! `/usr/share/modsecurity-crs/rules/x.conf`) is packed under a stable name
//! (`ext/up/filters/out/x.wasm`, `ext/root/usr/share/...`) and the bundled copy of the
//! policy names it there, with the granted file's name for the filter unchanged
//! (`{ path = "ext/root/...", name = "/usr/share/..." }`), so rules that `Include` each
//! other by name still find one another. Globs are expanded at push time.
//!
//! Node-local material is never packed: TLS certificates and keys, `admin_token_file`,
//! an upstream `ca_file` and an access-log file stay paths on the node, made absolute
//! (resolved against the pushed policy's directory).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context};

use super::{FILE_MEDIA_TYPE, POLICY_MEDIA_TYPE, POLICY_TITLE, WASM_MEDIA_TYPE};
use crate::policy::files::FileEntry;
use crate::policy::Policy;

/// One layer of a bundle.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Its path in the bundle (`org.opencontainers.image.title`).
    pub title: String,
    /// Its media type.
    pub media_type: &'static str,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// A packed policy: the policy layer first, then modules and files by title.
#[derive(Debug)]
pub struct Packed {
    /// The layers.
    pub layers: Vec<Layer>,
    /// Paths left on the node (made absolute in the bundled policy).
    pub node_local: Vec<String>,
}

/// The policy file `input` names: the file itself, or `policy.toml` in a directory.
pub fn policy_path(input: &Path) -> PathBuf {
    if input.is_dir() {
        input.join(POLICY_TITLE)
    } else {
        input.to_path_buf()
    }
}

/// Where a path written in a policy (relative to its directory, or absolute) goes in the
/// bundle: inside the directory it keeps its (normalized) relative path, outside it is
/// under `ext/up/...` (one `up` per `..` left over) or `ext/root/...`.
pub fn bundle_path(written: &str) -> String {
    let p = Path::new(written);
    let mut parts: Vec<String> = Vec::new();
    let mut ups = 0usize;
    for c in p.components() {
        match c {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() && !p.is_absolute() {
                    ups += 1;
                }
            }
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
        }
    }
    let tail = parts.join("/");
    if p.is_absolute() {
        format!("ext/root/{tail}")
    } else if ups > 0 {
        format!("ext/{}{tail}", "up/".repeat(ups))
    } else {
        tail
    }
}

/// Packs the policy `input` names (a file, or a directory with `policy.toml`).
pub fn pack(input: &Path) -> anyhow::Result<Packed> {
    let path = policy_path(input);
    let policy = Policy::load(&path).map_err(|e| anyhow!("{e}"))?;
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let mut table: toml::Table = text.parse().context("policy TOML")?;
    let base = path.parent().unwrap_or(Path::new("."));
    let base_abs = std::fs::canonicalize(if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base
    })
    .with_context(|| base.display().to_string())?;

    let mut layers: BTreeMap<String, Layer> = BTreeMap::new();
    let mut add = |title: String, media_type: &'static str, data: Vec<u8>| -> anyhow::Result<()> {
        if let Some(old) = layers.get(&title) {
            if old.data != data {
                bail!("two different files would be packed as {title}");
            }
            return Ok(());
        }
        layers.insert(
            title.clone(),
            Layer {
                title,
                media_type,
                data,
            },
        );
        Ok(())
    };

    if let Some(toml::Value::Table(filters)) = table.get_mut("filters") {
        for (name, f) in filters.iter_mut() {
            // A Proxy-Wasm filter (module and files) or a component (module only).
            let (module, grants) = match policy.filters.iter().find(|d| &d.name == name) {
                Some(d) => (&d.module, Some(&d.files)),
                None => policy
                    .components
                    .iter()
                    .find(|c| &c.name == name)
                    .map(|c| (&c.module, None))
                    .ok_or_else(|| anyhow!("filter {name:?} not in the validated policy"))?,
            };
            let f = f
                .as_table_mut()
                .ok_or_else(|| anyhow!("filter {name:?} is not a table"))?;
            let written = f
                .get("module")
                .and_then(|m| m.as_str())
                .ok_or_else(|| anyhow!("filter {name:?}: module"))?
                .to_string();
            // A module named by digest in a registry stays there: nodes fetch it.
            if !super::BundleRef::is_bundle(&written) {
                let title = bundle_path(&written);
                let data = std::fs::read(module)
                    .with_context(|| format!("filter {name:?}: {}", module.display()))?;
                add(title.clone(), WASM_MEDIA_TYPE, data)?;
                f.insert("module".into(), toml::Value::String(title));
            }
            if let (true, Some(grants)) = (f.contains_key("files"), grants) {
                let mut entries = Vec::new();
                for grant in grants.iter() {
                    let title = bundle_path(&grant.name);
                    add(title.clone(), FILE_MEDIA_TYPE, grant.data.to_vec())?;
                    entries.push(if title == grant.name {
                        FileEntry::Pattern(title)
                    } else {
                        FileEntry::Named {
                            path: title,
                            name: grant.name.clone(),
                        }
                    });
                }
                f.insert("files".into(), toml::Value::try_from(entries)?);
            }
        }
    }

    let mut node_local = Vec::new();
    let mut absolute = |v: &mut toml::Value| {
        if let Some(s) = v.as_str() {
            if s != "stdout" && s != "off" && !Path::new(s).is_absolute() {
                let abs = base_abs.join(s).display().to_string();
                node_local.push(abs.clone());
                *v = toml::Value::String(abs);
            } else if s != "stdout" && s != "off" {
                node_local.push(s.to_string());
            }
        }
    };
    if let Some(server) = table.get_mut("server").and_then(|s| s.as_table_mut()) {
        for key in ["admin_token_file", "access_log"] {
            if let Some(v) = server.get_mut(key) {
                absolute(v);
            }
        }
    }
    if let Some(certs) = table
        .get_mut("tls")
        .and_then(|t| t.get_mut("certificates"))
        .and_then(|c| c.as_array_mut())
    {
        for c in certs.iter_mut() {
            for key in ["cert", "key"] {
                if let Some(v) = c.get_mut(key) {
                    absolute(v);
                }
            }
        }
    }
    if let Some(pools) = table.get_mut("pools").and_then(|p| p.as_table_mut()) {
        for (_, pool) in pools.iter_mut() {
            if let Some(v) = pool.get_mut("tls").and_then(|t| t.get_mut("ca_file")) {
                absolute(v);
            }
        }
    }

    let bundled = format!(
        "# Bundled by `sluice bundle push` from {}: modules and files from outside its\n# directory are under ext/ (docs/POLICY.md, \"Policy bundles\").\n{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        toml::to_string(&table).context("writing the bundled policy")?
    );
    // The bundled copy must validate as it will be read on a node.
    let mut out = vec![Layer {
        title: POLICY_TITLE.into(),
        media_type: POLICY_MEDIA_TYPE,
        data: bundled.into_bytes(),
    }];
    if layers.contains_key(POLICY_TITLE) {
        bail!("a module or file would be packed as {POLICY_TITLE}, the policy's own title");
    }
    out.extend(layers.into_values());
    Ok(Packed {
        layers: out,
        node_local,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_outside_the_directory_get_stable_names() {
        assert_eq!(
            bundle_path("waf/example-rules.conf"),
            "waf/example-rules.conf"
        );
        assert_eq!(bundle_path("./a/../b.wasm"), "b.wasm");
        assert_eq!(
            bundle_path("../filters/out/waf.wasm"),
            "ext/up/filters/out/waf.wasm"
        );
        assert_eq!(bundle_path("../../x"), "ext/up/up/x");
        assert_eq!(
            bundle_path("/usr/share/modsecurity-crs/rules/a.conf"),
            "ext/root/usr/share/modsecurity-crs/rules/a.conf"
        );
        assert_eq!(bundle_path("/etc/../x"), "ext/root/x");
    }
}

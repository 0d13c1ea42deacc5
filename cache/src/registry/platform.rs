//! Platforms (`os/arch[/variant]`, normalised as containerd does) and the choice of an image
//! index's entry for one.

use serde_json::Value;

/// A platform, e.g. `linux/amd64` or `linux/arm/v7`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    /// `None` for the architecture's default (`v8` on arm64, `v7` on arm is spelled out).
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]` (or `arch` alone for linux), normalising architecture names
    /// (`x86_64` is `amd64`, `aarch64` is `arm64`, arm's default variant is `v7`, arm64's `v8`).
    pub fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [arch] => ("linux", *arch, None),
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some(*variant)),
            _ => return Err(format!("`{s}` is not a platform (os/arch[/variant])")),
        };
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !ok(os) || !ok(arch) || variant.is_some_and(|v| !ok(v)) {
            return Err(format!(
                "`{}` is not a platform (os/arch[/variant])",
                super::reference::escape(s)
            ));
        }
        Ok(Platform::normalised(os, arch, variant))
    }

    fn normalised(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        let os = os.to_ascii_lowercase();
        let variant = variant.map(str::to_ascii_lowercase);
        let (arch, variant) = match (arch.to_ascii_lowercase().as_str(), variant) {
            ("x86_64" | "x86-64", _) => ("amd64".to_string(), None),
            ("aarch64" | "arm64", v) => ("arm64".to_string(), v.filter(|v| v != "v8" && v != "8")),
            ("armhf", _) => ("arm".to_string(), Some("v7".to_string())),
            ("armel", _) => ("arm".to_string(), Some("v6".to_string())),
            ("arm", v) => (
                "arm".to_string(),
                Some(match v.as_deref() {
                    None | Some("7") | Some("v7") => "v7".to_string(),
                    Some("6") => "v6".to_string(),
                    Some("5") => "v5".to_string(),
                    Some(v) => v.to_string(),
                }),
            ),
            ("i386" | "i686" | "x86", _) => ("386".to_string(), None),
            (a, v) => (a.to_string(), v),
        };
        Platform {
            os,
            architecture: arch,
            variant,
        }
    }

    /// The platform this program runs on (the usual one of a local engine).
    pub fn host() -> Platform {
        Platform::normalised(std::env::consts::OS, std::env::consts::ARCH, None)
    }

    /// Whether an index entry's `platform` object describes this platform.
    pub fn matches(&self, entry: &Value) -> bool {
        let (Some(os), Some(arch)) = (entry["os"].as_str(), entry["architecture"].as_str()) else {
            return false;
        };
        let other = Platform::normalised(os, arch, entry["variant"].as_str());
        other == *self
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Platform, String> {
        Platform::parse(s)
    }
}

/// The digest of the entry of an index's `manifests` for `platform`, or the platforms it has
/// (attestation entries, `unknown/unknown`, are never chosen).
pub fn pick(index: &Value, platform: &Platform) -> Result<String, Vec<String>> {
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    if let Some(d) = entries
        .iter()
        .find(|e| platform.matches(&e["platform"]))
        .and_then(|e| e["digest"].as_str())
    {
        return Ok(d.to_string());
    }
    Err(entries
        .iter()
        .filter_map(|e| {
            let p = &e["platform"];
            let (os, arch) = (p["os"].as_str()?, p["architecture"].as_str()?);
            Some(Platform::normalised(os, arch, p["variant"].as_str()).to_string())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_normalise_as_containerd_does() {
        let p = |s: &str| Platform::parse(s).expect("platform").to_string();
        assert_eq!(p("linux/amd64"), "linux/amd64");
        assert_eq!(p("linux/x86_64"), "linux/amd64");
        assert_eq!(p("linux/arm64/v8"), "linux/arm64");
        assert_eq!(p("linux/aarch64"), "linux/arm64");
        assert_eq!(p("linux/arm"), "linux/arm/v7");
        assert_eq!(p("arm64"), "linux/arm64");
        assert!(Platform::parse("linux/amd64/v2/x").is_err());
        assert!(Platform::parse("linux/").is_err());
        assert!(Platform::parse("linux/am d64").is_err());
        assert_eq!(Platform::host().os, std::env::consts::OS);
    }

    #[test]
    fn an_index_entry_is_chosen_by_platform_never_an_attestation() {
        let index = serde_json::json!({"manifests": [
            {"digest": "sha256:att", "platform": {"os": "unknown", "architecture": "unknown"}},
            {"digest": "sha256:arm", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}},
            {"digest": "sha256:v7", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        ]});
        let pick = |s: &str| pick(&index, &Platform::parse(s).expect("platform"));
        assert_eq!(pick("linux/amd64"), Ok("sha256:amd".into()));
        assert_eq!(pick("linux/arm64"), Ok("sha256:arm".into()));
        assert_eq!(pick("linux/arm/v7"), Ok("sha256:v7".into()));
        assert_eq!(
            pick("linux/s390x"),
            Err(vec![
                "unknown/unknown".into(),
                "linux/arm64".into(),
                "linux/amd64".into(),
                "linux/arm/v7".into()
            ])
        );
    }
}

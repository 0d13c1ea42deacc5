//! An image's filesystem read natively from `docker save`: every layer's entries (a file added in
//! one layer and deleted in a later one is still there, as it is in the image), and the final tree
//! after applying the layers in order with their whiteouts (`.wh.<name>`, `.wh..wh..opq`).
//!
//! `docker save` writes a tar of layer tars (Docker's legacy layout, or the OCI layout of newer
//! engines, both with a `manifest.json` giving the layer order). The outer tar is read as a stream:
//! each layer is summarised as it passes (paths, kinds, sizes, and the content of the few small
//! files a check asked for), so no layer is ever held in memory or written to disk.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use serde::Deserialize;

use crate::{Error, Result};

/// The marker prefix of a whiteout file.
const WHITEOUT: &str = ".wh.";
/// The name of an opaque-directory marker.
const OPAQUE: &str = ".wh..wh..opq";

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// Devices, fifos.
    Other,
}

/// One entry a layer adds (or replaces).
#[derive(Debug, Clone)]
pub struct Entry {
    /// Absolute and normalised: `/app/service/package.json`.
    pub path: String,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    /// A symlink's target, as written.
    pub link: Option<String>,
    /// The bytes of the file, when the reader asked for them.
    pub content: Option<Arc<[u8]>>,
    /// What kind of credential the file looks like ([`crate::secrets`]), judged as the layer
    /// streamed past from its path and the head of its bytes.
    pub secret: Option<crate::secrets::Kind>,
}

/// One layer: what it deletes from the layers below, and what it adds.
#[derive(Debug, Clone, Default)]
pub struct Layer {
    /// Paths deleted from the lower layers (`.wh.<name>`).
    pub whiteouts: Vec<String>,
    /// Directories whose lower contents are hidden (`.wh..wh..opq`).
    pub opaque: Vec<String>,
    /// Entries added, in archive order.
    pub entries: Vec<Entry>,
}

/// One path of the final filesystem.
#[derive(Debug, Clone)]
pub struct Node {
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    pub link: Option<String>,
    pub content: Option<Arc<[u8]>>,
    /// The index of the layer that wrote it last.
    pub layer: usize,
}

/// An image's layers and the filesystem they make.
#[derive(Debug, Clone, Default)]
pub struct ImageFs {
    pub layers: Vec<Layer>,
    /// The final tree, keyed by absolute path (`/` itself is not listed).
    pub files: BTreeMap<String, Node>,
}

impl ImageFs {
    /// Applies `layers` in order: each layer's whiteouts hide paths of the layers below it, then
    /// its entries are added (a non-directory replaces a whole subtree).
    pub fn from_layers(layers: Vec<Layer>) -> ImageFs {
        let mut files: BTreeMap<String, Node> = BTreeMap::new();
        for (i, layer) in layers.iter().enumerate() {
            for dir in &layer.opaque {
                remove_below(&mut files, dir);
            }
            for path in &layer.whiteouts {
                files.remove(path);
                remove_below(&mut files, path);
            }
            for e in &layer.entries {
                if e.kind != Kind::Dir {
                    remove_below(&mut files, &e.path);
                }
                files.insert(
                    e.path.clone(),
                    Node {
                        kind: e.kind,
                        size: e.size,
                        mode: e.mode,
                        link: e.link.clone(),
                        content: e.content.clone(),
                        layer: i,
                    },
                );
            }
        }
        ImageFs { layers, files }
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.files.get(path)
    }

    pub fn exists(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }

    /// The content of a file the reader kept.
    pub fn content(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).and_then(|n| n.content.as_deref())
    }

    /// Every path strictly below `dir`, in order.
    pub fn below<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a String, &'a Node)> + 'a {
        let (lo, hi) = subtree_bounds(dir);
        self.files.range(lo..hi)
    }

    /// The path exists, or something below it does (a layer need not list parent directories).
    pub fn has(&self, path: &str) -> bool {
        self.exists(path) || self.below(path).next().is_some()
    }

    /// The names of the direct children of `dir` (also those only implied by deeper paths).
    pub fn children(&self, dir: &str) -> Vec<&str> {
        let prefix = if dir == "/" {
            "/".to_string()
        } else {
            format!("{dir}/")
        };
        let names: std::collections::BTreeSet<&str> = self
            .below(dir)
            .filter_map(|(p, _)| p.strip_prefix(&prefix))
            .map(|rest| rest.split('/').next().unwrap_or(rest))
            .collect();
        names.into_iter().collect()
    }
}

/// The key range of the paths strictly below `dir` (`0` is the byte after `/`).
fn subtree_bounds(dir: &str) -> (String, String) {
    let base = dir.trim_end_matches('/');
    (format!("{base}/"), format!("{base}0"))
}

fn remove_below(files: &mut BTreeMap<String, Node>, dir: &str) {
    let (lo, hi) = subtree_bounds(dir);
    let doomed: Vec<String> = files.range(lo..hi).map(|(p, _)| p.clone()).collect();
    for p in doomed {
        files.remove(&p);
    }
}

/// Normalises a path inside an archive to an absolute one (`./app/x/` -> `/app/x`); `None` for
/// the root itself.
pub fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    if parts.is_empty() {
        None
    } else {
        Some(format!("/{}", parts.join("/")))
    }
}

/// Which files to keep the bytes of: given an absolute path and its size, the most bytes to keep
/// (`None`: not this one). A file larger than the limit is kept without its content.
pub type Want = dyn Fn(&str, u64) -> Option<u64> + Sync;

/// Reads one layer tar.
pub fn read_layer<R: Read>(reader: R, want: &Want) -> io::Result<Layer> {
    let mut archive = tar::Archive::new(reader);
    let mut layer = Layer::default();
    // Hard links point at an earlier entry of the same layer.
    let mut by_path: HashMap<String, usize> = HashMap::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(path) = normalize(&raw) else {
            continue;
        };
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (if d.is_empty() { "/" } else { d }, n),
            None => ("/", path.as_str()),
        };
        if name == OPAQUE {
            layer.opaque.push(dir.to_string());
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            let target = if dir == "/" {
                format!("/{hidden}")
            } else {
                format!("{dir}/{hidden}")
            };
            layer.whiteouts.push(target);
            continue;
        }
        let header = entry.header();
        let mode = header.mode().unwrap_or(0);
        let size = header.size().unwrap_or(0);
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        let etype = header.entry_type();
        let e = if etype.is_hard_link() {
            let target = link.as_deref().and_then(normalize);
            match target
                .and_then(|t| by_path.get(&t).copied())
                .and_then(|i| layer.entries.get(i))
            {
                // The same bytes under another name: a secret by either name.
                Some(t) => Entry {
                    path: path.clone(),
                    mode,
                    secret: t
                        .secret
                        .or_else(|| crate::secrets::classify(&path, t.size, None)),
                    ..t.clone()
                },
                None => Entry {
                    path: path.clone(),
                    kind: Kind::File,
                    size: 0,
                    mode,
                    link: None,
                    content: None,
                    secret: crate::secrets::classify(&path, 0, None),
                },
            }
        } else {
            let kind = if etype.is_dir() {
                Kind::Dir
            } else if etype.is_symlink() {
                Kind::Symlink
            } else if etype.is_file() || etype == tar::EntryType::Continuous {
                Kind::File
            } else {
                Kind::Other
            };
            let content = match (kind, want(&path, size)) {
                (Kind::File, Some(limit)) if size <= limit => {
                    let mut buf = Vec::with_capacity(size as usize);
                    entry.read_to_end(&mut buf)?;
                    Some(Arc::<[u8]>::from(buf))
                }
                _ => None,
            };
            let secret = if kind == Kind::File {
                secret_of(&path, size, content.as_deref(), &mut entry)?
            } else {
                None
            };
            Entry {
                path: path.clone(),
                kind,
                size,
                mode,
                link: if kind == Kind::Symlink { link } else { None },
                content,
                secret,
            }
        };
        by_path.insert(path, layer.entries.len());
        layer.entries.push(e);
    }
    Ok(layer)
}

/// Judges a file as it streams past: from its path, and the head of its bytes when the path
/// cannot decide (`content`, when kept whole, else read from the entry now).
fn secret_of<R: Read>(
    path: &str,
    size: u64,
    content: Option<&[u8]>,
    entry: &mut R,
) -> io::Result<Option<crate::secrets::Kind>> {
    let Some(limit) = crate::secrets::need(path, size) else {
        return Ok(crate::secrets::classify(path, size, None));
    };
    if let Some(c) = content {
        let n = (limit as usize).min(c.len());
        return Ok(crate::secrets::classify(path, size, Some(&c[..n])));
    }
    let mut head = Vec::with_capacity(limit.min(size) as usize);
    entry.take(limit).read_to_end(&mut head)?;
    Ok(crate::secrets::classify(path, size, Some(&head)))
}

#[derive(Deserialize)]
struct ManifestEntry {
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// What a blob of a `docker save` archive is, from its first bytes.
enum Blob {
    Tar,
    Gzip,
    Zstd,
    Other,
}

fn sniff(head: &[u8]) -> Blob {
    if head.starts_with(&[0x1f, 0x8b]) {
        Blob::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Blob::Zstd
    } else if head.len() == 512 && (&head[257..262] == b"ustar" || head.iter().all(|b| *b == 0)) {
        // A tar header, or the end-of-archive block an empty layer starts with.
        Blob::Tar
    } else {
        Blob::Other
    }
}

/// Reads up to `n` bytes (fewer only at the end of the stream).
fn read_head<R: Read>(r: &mut R, n: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    let mut len = 0;
    while len < n {
        match r.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(k) => len += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    Ok(buf)
}

/// Reads a `docker save` archive: the layers in the image's order.
pub fn read_save<R: Read>(reader: R, want: &Want) -> std::result::Result<Vec<Layer>, String> {
    let mut archive = tar::Archive::new(reader);
    let mut layers: HashMap<String, Layer> = HashMap::new();
    let mut aliases: HashMap<String, String> = HashMap::new();
    let mut manifest: Option<Vec<ManifestEntry>> = None;
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("unreadable archive: {e}"))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(path) = normalize(&raw) else {
            continue;
        };
        let path = path.trim_start_matches('/').to_string();
        let etype = entry.header().entry_type();
        if etype.is_symlink() || etype.is_hard_link() {
            if let Some(link) = entry.link_name_bytes() {
                let link = String::from_utf8_lossy(&link).into_owned();
                let target = if etype.is_symlink() {
                    let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    normalize(&format!("{dir}/{link}"))
                } else {
                    normalize(&link)
                };
                if let Some(t) = target {
                    aliases.insert(path, t.trim_start_matches('/').to_string());
                }
            }
            continue;
        }
        if !etype.is_file() {
            continue;
        }
        if path == "manifest.json" {
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|e| format!("unreadable manifest.json: {e}"))?;
            manifest = Some(
                serde_json::from_str(&text).map_err(|e| format!("invalid manifest.json: {e}"))?,
            );
            continue;
        }
        let head = read_head(&mut entry, 512).map_err(|e| format!("unreadable `{path}`: {e}"))?;
        let rest = io::Cursor::new(head.clone()).chain(&mut entry);
        let layer = match sniff(&head) {
            Blob::Tar => read_layer(rest, want),
            Blob::Gzip => read_layer(flate2::read::GzDecoder::new(rest), want),
            Blob::Zstd => {
                return Err(format!(
                    "layer `{path}` is zstd-compressed, which verify cannot read yet"
                ))
            }
            Blob::Other => continue,
        }
        .map_err(|e| format!("unreadable layer `{path}`: {e}"))?;
        layers.insert(path, layer);
    }
    let manifest = manifest.ok_or("no manifest.json in the archive")?;
    let first = manifest
        .into_iter()
        .next()
        .ok_or("manifest.json lists no image")?;
    let mut out = Vec::with_capacity(first.layers.len());
    for name in &first.layers {
        let mut key = normalize(name)
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string();
        for _ in 0..8 {
            match aliases.get(&key) {
                Some(t) => key = t.clone(),
                None => break,
            }
        }
        let layer = layers
            .get(&key)
            .ok_or_else(|| format!("manifest.json names layer `{name}`, which is not a layer"))?;
        out.push(layer.clone());
    }
    Ok(out)
}

/// Runs `docker save IMAGE` and reads its layers as they stream.
pub fn save(client: &Path, image: &str, want: &Want) -> Result<ImageFs> {
    let mut child = Command::new(client)
        .args(["save", image])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("run", client, e))?;
    let stderr = child.stderr.take();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let parsed = match child.stdout.take() {
        Some(mut out) => {
            let r = read_save(&mut out, want);
            // Drain what follows the archive's end so `docker save` can exit.
            let _ = io::copy(&mut out, &mut io::sink());
            r
        }
        None => Err("no output".to_string()),
    };
    if parsed.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| Error::io("wait for", client, e))?;
    let stderr = err_reader.join().unwrap_or_default();
    if !status.success() {
        return Err(Error::Other(format!(
            "`docker save {image}` failed ({}): {}",
            status
                .code()
                .map(|c| format!("exit code {c}"))
                .unwrap_or_else(|| "killed by a signal".to_string()),
            crate::execute::docker::tail(&stderr, 5).trim()
        )));
    }
    let layers = parsed.map_err(|m| {
        Error::Other(format!(
            "cannot read the layers of `{image}` from `docker save`: {m}"
        ))
    })?;
    Ok(ImageFs::from_layers(layers))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer tar with files (`path`, content), directories (`path/`) and symlinks (`path -> t`).
    pub(crate) fn layer_tar(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, content) in entries {
            let mut h = tar::Header::new_gnu();
            if let Some(dir) = path.strip_suffix('/') {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, dir, io::empty()).expect("dir");
            } else if let Some((p, target)) = path.split_once(" -> ") {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).expect("link");
            } else {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(content.len() as u64);
                b.append_data(&mut h, path, content.as_bytes())
                    .expect("file");
            }
        }
        b.into_inner().expect("tar")
    }

    fn all(_: &str, _: u64) -> Option<u64> {
        Some(1 << 20)
    }

    fn fs_of(layers: &[&[(&str, &str)]]) -> ImageFs {
        let layers = layers
            .iter()
            .map(|l| read_layer(&layer_tar(l)[..], &all).expect("layer"))
            .collect();
        ImageFs::from_layers(layers)
    }

    #[test]
    fn whiteouts_delete_from_lower_layers_only() {
        let fs = fs_of(&[
            &[
                ("app/", ""),
                ("app/a.txt", "a"),
                ("app/.env", "SECRET=1"),
                ("app/dir/", ""),
                ("app/dir/x", "x"),
            ],
            &[
                ("app/.wh..env", ""),
                ("app/.wh.dir", ""),
                ("app/b.txt", "b"),
            ],
        ]);
        assert!(fs.exists("/app/a.txt"));
        assert!(fs.exists("/app/b.txt"));
        assert!(!fs.exists("/app/.env"), "whited out");
        assert!(!fs.exists("/app/dir") && !fs.exists("/app/dir/x"));
        // The first layer still holds the deleted file.
        assert!(fs.layers[0].entries.iter().any(|e| e.path == "/app/.env"));
        assert_eq!(fs.get("/app/b.txt").map(|n| n.layer), Some(1));
        assert_eq!(fs.content("/app/a.txt"), Some(&b"a"[..]));
    }

    #[test]
    fn secrets_are_judged_as_the_layer_streams_even_when_no_content_is_kept() {
        let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----\n";
        let mut b = tar::Builder::new(Vec::new());
        for (path, content) in [
            ("root/deploy", key),
            ("app/index.js", "x"),
            ("root/.netrc", "m"),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o600);
            h.set_size(content.len() as u64);
            b.append_data(&mut h, path, content.as_bytes())
                .expect("file");
        }
        // A hard link gives the same bytes another name, whatever the name says.
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        b.append_link(&mut h, "app/harmless", "root/deploy")
            .expect("link");
        let bytes = b.into_inner().expect("tar");
        let layer = read_layer(&bytes[..], &|_, _| None).expect("layer");
        let secret = |p: &str| {
            layer
                .entries
                .iter()
                .find(|e| e.path == p)
                .and_then(|e| e.secret)
        };
        assert_eq!(secret("/root/deploy"), Some("an SSH private key"));
        assert_eq!(secret("/app/harmless"), Some("an SSH private key"));
        assert_eq!(secret("/root/.netrc"), Some("a .netrc file"));
        assert_eq!(secret("/app/index.js"), None);
        assert!(
            layer.entries.iter().all(|e| e.content.is_none()),
            "nothing kept"
        );
    }

    #[test]
    fn opaque_directories_hide_lower_contents_but_keep_their_own() {
        let fs = fs_of(&[
            &[("app/", ""), ("app/old/", ""), ("app/old/x", "x")],
            &[("app/", ""), ("app/.wh..wh..opq", ""), ("app/new", "n")],
        ]);
        assert!(fs.exists("/app"));
        assert!(fs.exists("/app/new"));
        assert!(!fs.exists("/app/old/x") && !fs.exists("/app/old"));
        assert_eq!(fs.children("/app"), vec!["new"]);
    }

    #[test]
    fn a_file_replacing_a_directory_removes_its_subtree() {
        let fs = fs_of(&[
            &[
                ("app/", ""),
                ("app/x/", ""),
                ("app/x/y", "y"),
                ("app/x-z", "z"),
            ],
            &[("app/x", "file now")],
        ]);
        assert_eq!(fs.get("/app/x").map(|n| n.kind), Some(Kind::File));
        assert!(!fs.exists("/app/x/y"));
        assert!(fs.exists("/app/x-z"), "a sibling sharing the prefix stays");
        assert_eq!(fs.children("/app"), vec!["x", "x-z"]);
        let fs = fs_of(&[&[("app/a/x", "1"), ("app/a-b", "2"), ("app/a/y", "3")]]);
        assert_eq!(
            fs.children("/app"),
            vec!["a", "a-b"],
            "implied directories count"
        );
        assert!(fs.has("/app/a") && !fs.exists("/app/a"));
    }

    #[test]
    fn symlinks_and_normalised_paths() {
        let fs = fs_of(&[&[
            ("./usr/", ""),
            (
                "./usr/local/bin/pnpm -> ../lib/node_modules/corepack/dist/pnpm.js",
                "",
            ),
        ]]);
        let n = fs.get("/usr/local/bin/pnpm").expect("link");
        assert_eq!(n.kind, Kind::Symlink);
        assert_eq!(
            n.link.as_deref(),
            Some("../lib/node_modules/corepack/dist/pnpm.js")
        );
        assert_eq!(normalize("./a//b/./c/"), Some("/a/b/c".to_string()));
        assert_eq!(normalize("./"), None);
    }

    /// A `docker save` archive in the legacy layout, with a layer stored as a symlink to another
    /// (as Docker dedups identical layers) and a gzip-compressed one.
    #[test]
    fn reads_a_save_archive_in_manifest_order() {
        let l1 = layer_tar(&[("etc/", ""), ("etc/passwd", "root:x:0:0::/root:/bin/sh\n")]);
        let l2 = layer_tar(&[]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &layer_tar(&[("app/", ""), ("app/x", "x")]))
            .expect("gzip");
        let l3 = gz.finish().expect("gzip");
        let manifest = r#"[{"Config":"c.json","RepoTags":null,"Layers":["b/layer.tar","a/layer.tar","c/layer.tar","d/layer.tar"]}]"#;
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in [
            ("a/layer.tar", &l1),
            ("b/layer.tar", &l2),
            ("c/layer.tar", &l3),
            ("c.json", &b"{}".to_vec()),
            ("manifest.json", &manifest.as_bytes().to_vec()),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, path, &data[..]).expect("append");
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "d/layer.tar", "../b/layer.tar")
            .expect("link");
        let archive = b.into_inner().expect("tar");
        let layers = read_save(&archive[..], &all).expect("read");
        assert_eq!(layers.len(), 4);
        assert!(layers[0].entries.is_empty() && layers[3].entries.is_empty());
        assert_eq!(layers[1].entries[1].path, "/etc/passwd");
        let fs = ImageFs::from_layers(layers);
        assert!(fs.exists("/app/x"));
        assert_eq!(fs.get("/app/x").map(|n| n.layer), Some(2));
    }

    #[test]
    fn an_archive_without_manifest_is_an_error() {
        let archive = layer_tar(&[("x", "y")]);
        let err = read_save(&archive[..], &all).expect_err("no manifest");
        assert!(err.contains("manifest.json"), "{err}");
    }
}

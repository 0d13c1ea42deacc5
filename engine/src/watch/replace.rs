//! `--up` without Compose: puts a given image (by id) into service for a compose service by
//! replacing each of its running containers, over the Engine API, with the container Compose
//! would have made from that image: same name, same config (env, labels, command, ports, health
//! check, user...), same host config (port bindings, restart policy, binds, log config...), same
//! networks and aliases. It costs the engine's own work (create, stop, start) without Compose's
//! start-up and requests: about half of `docker-compose up -d --no-deps --force-recreate` here.
//!
//! [`Compose::replace`] (or [`replace`] with the socket and project) returns the new containers'
//! ids, or a [`Replace`]:
//!
//! - [`Replace::NotApplicable`]: nothing was changed, and Compose must do it (`up -d --no-deps
//!   --force-recreate <service>`), for the reason given: no local engine socket (a remote
//!   `DOCKER_HOST`, another docker context); no container of the service yet, or one not running;
//!   a container in another container's network (`network_mode: service:`/`container:`) or one
//!   whose network another container shares; anonymous volumes (the image's `VOLUME`s or a
//!   `- /path` in compose: Compose carries them over to the new container, this does not); a new
//!   image whose config differs from the running image's in anything but labels (`ENV`, `CMD`,
//!   `ENTRYPOINT`, `WORKDIR`, `USER`, `EXPOSE`, `HEALTHCHECK`, `VOLUME`, `STOPSIGNAL`, `ONBUILD`,
//!   `SHELL`): a container's config is the image's merged with its own, and only an equal image
//!   config makes the copy what Compose would make. Every replica is checked before any changes.
//! - [`Replace::Failed`]: it was tried and failed; the message says what runs now and what to do.
//!   An image that is not in the engine, or a create the engine refuses, changes nothing.
//!
//! A container that already runs the image is kept (its id is returned).
//!
//! The new container's config is the old one's with the new image, except: the hostname is left
//! to Docker when it was the old container's short id (Docker's default); labels that came from
//! the old image (same key and value) take the new image's (the key label among them); the
//! network aliases lose the old short id (the engine adds the new one, as Compose v1 does). The
//! `com.docker.compose.*` labels stay as they were, `config-hash` included, but for Compose v2's
//! `com.docker.compose.image`, which names the new image when it named the old one (as v2 writes
//! it at create). `Config.Image` is the image id (Compose writes the reference it was given, e.g.
//! `kc-x:latest`).
//!
//! Order: every new container is first created under a temporary name (`<name>_new_<image>`),
//! so a config the engine refuses fails while the old ones run; then, one replica after another,
//! the old one is stopped (its `StopTimeout`, else 10 s), renamed aside (`<name>_old_<id>`), the
//! new one renamed to the old name and started, and the old one removed. When a step after the
//! stop fails, the new one is removed and the old one renamed back and started again. Compose v1
//! does the same dance (stop, rename aside, create, start, remove).
//!
//! **Compose v1 afterwards** (1.29.2, read in its `service.py` and seen in the tests): its
//! `config-hash` label hashes the service's options *and the id of the image its `image:` names*.
//! So while that tag still names the old image, `docker-compose up -d` sees no change and leaves
//! the replaced container (running the new image) alone: putting the old image back needs
//! [`replace`] with its id, or `up --force-recreate`. Once the tag names the new image, the first
//! `up -d` recreates the container once (same config, same image, a fresh `config-hash`); later
//! ones leave it alone. Compose v2 (not installed here, read in its `convergence.go`) hashes the
//! options only and compares `com.docker.compose.image` with the tag's image id: it leaves the
//! container alone once the tag names the new image, and recreates it while the tag names the
//! old one.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::compose::Compose;
use crate::execute::api::{self, Response};

const PROJECT: &str = "com.docker.compose.project";
const SERVICE: &str = "com.docker.compose.service";
const ONEOFF: &str = "com.docker.compose.oneoff";
const NUMBER: &str = "com.docker.compose.container-number";
/// Compose v2's label of the image id a container was made from (what its `up` compares).
const IMAGE: &str = "com.docker.compose.image";

/// Docker's stop timeout when a container has none of its own.
const DEFAULT_STOP: u64 = 10;

/// The image config fields that a container's config merges in, by their Dockerfile names: the
/// new image must equal the running one in each.
const MERGED: &[(&str, &str)] = &[
    ("Env", "ENV"),
    ("Cmd", "CMD"),
    ("Entrypoint", "ENTRYPOINT"),
    ("WorkingDir", "WORKDIR"),
    ("User", "USER"),
    ("ExposedPorts", "EXPOSE"),
    ("Healthcheck", "HEALTHCHECK"),
    ("Volumes", "VOLUME"),
    ("StopSignal", "STOPSIGNAL"),
    ("OnBuild", "ONBUILD"),
    ("Shell", "SHELL"),
];

/// Why a service's containers were not replaced, or not all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replace {
    /// Nothing was changed; Compose should do it. Says why.
    NotApplicable(String),
    /// Tried and failed: what happened, what runs now, and what to do.
    Failed(String),
}

impl std::fmt::Display for Replace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Replace::NotApplicable(why) | Replace::Failed(why) => f.write_str(why),
        }
    }
}

impl Compose {
    /// Replaces every running container of compose service `service` with one running
    /// `image_id` (see the module's doc); the new containers' ids, by container number.
    pub fn replace(&self, service: &str, image_id: &str) -> Result<Vec<String>, Replace> {
        let socket = crate::execute::api::engine_socket().ok_or_else(|| {
            Replace::NotApplicable(
                "no local Docker engine socket (DOCKER_HOST or the docker context names another engine)"
                    .into(),
            )
        })?;
        let project = self.project().ok_or_else(|| {
            Replace::NotApplicable(format!(
                "no compose project name for `{}`",
                self.file.display()
            ))
        })?;
        replace(&socket, &project, service, image_id)
    }
}

/// The Engine API at one socket, with errors as text.
struct Engine<'a> {
    socket: &'a Path,
}

impl Engine<'_> {
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Response, String> {
        api::request(self.socket, method, path, body, timeout).map_err(|e| {
            format!(
                "the Docker engine at {} did not answer {method} {path}: {e}",
                self.socket.display()
            )
        })
    }

    /// A call that must succeed (or answer 304, "already so"); its JSON body.
    fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        self.ok_within(method, path, body, api::TIMEOUT)
    }

    fn ok_within(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value, String> {
        let r = self.call(method, path, body, timeout)?;
        if r.is_success() || r.status == 304 {
            Ok(r.json())
        } else {
            Err(format!("{} ({})", r.message(), r.status))
        }
    }
}

/// One replica: the old container and what makes the new one (`None`: it already runs the
/// image, and is kept).
#[derive(Debug, Clone)]
struct Swap {
    old_id: String,
    name: String,
    stop_timeout: u64,
    create: Option<Created>,
}

/// What creating a container takes: the create body and the networks connected afterwards.
#[derive(Debug, Clone, PartialEq)]
struct Created {
    body: Value,
    connect: Vec<(String, Value)>,
}

/// Replaces every running container of `service` in compose project `project` (found by
/// Compose's labels) with one running `image_id`; the new containers' ids, by container number
/// (a container that already runs the image is kept and its id returned).
pub fn replace(
    socket: &Path,
    project: &str,
    service: &str,
    image_id: &str,
) -> Result<Vec<String>, Replace> {
    let e = Engine { socket };
    let failed = Replace::Failed;
    let na = Replace::NotApplicable;
    if image_id.is_empty() || image_id.contains('/') {
        return Err(failed(format!("`{image_id}` is not an image id")));
    }
    let new_image = match e.call(
        "GET",
        &format!("/images/{}/json", api::encode(image_id)),
        None,
        api::TIMEOUT,
    ) {
        Ok(r) if r.status == 200 => r.json(),
        Ok(r) if r.status == 404 => {
            return Err(failed(format!(
                "image {image_id} is not in the Docker engine: nothing was changed"
            )))
        }
        Ok(r) => return Err(failed(format!("image {image_id}: {}", r.message()))),
        Err(m) => return Err(na(m)),
    };
    let new_id = new_image["Id"].as_str().unwrap_or(image_id).to_string();
    let swaps = plan(&e, project, service, &new_image)?;

    // Every new container is created first: a config the engine refuses changes nothing.
    let short_new = short(&new_id);
    let mut created: Vec<Option<String>> = Vec::new();
    for s in &swaps {
        let Some(c) = &s.create else {
            created.push(None);
            continue;
        };
        match create(&e, &format!("{}_new_{short_new}", s.name), c) {
            Ok(id) => created.push(Some(id)),
            Err(m) => {
                remove_all(&e, created.iter().flatten());
                return Err(failed(format!(
                    "could not create the new container of `{service}` ({}): {m}; nothing was changed",
                    s.name
                )));
            }
        }
    }

    let mut done = Vec::new();
    for (i, s) in swaps.iter().enumerate() {
        let Some(new) = &created[i] else {
            done.push(s.old_id.clone());
            continue;
        };
        if let Err(m) = swap(&e, service, s, new) {
            remove_all(&e, created[i + 1..].iter().flatten());
            let before = if done.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} replica(s) before it run the new image already",
                    done.len()
                )
            };
            return Err(failed(format!(
                "replacing container {} of `{service}` failed: {m}{before}",
                s.name
            )));
        }
        done.push(new.clone());
    }
    Ok(done)
}

/// Every container of the service, checked, and what makes its new container; nothing changed.
fn plan(
    e: &Engine<'_>,
    project: &str,
    service: &str,
    new_image: &Value,
) -> Result<Vec<Swap>, Replace> {
    let na = Replace::NotApplicable;
    let new_id = new_image["Id"].as_str().unwrap_or_default();
    let filters = json!({ "label": [
        format!("{PROJECT}={project}"),
        format!("{SERVICE}={service}"),
        format!("{ONEOFF}=False"),
    ]});
    let path = format!(
        "/containers/json{}",
        api::query(&[("all", "1"), ("filters", &filters.to_string())])
    );
    let listed = e.ok("GET", &path, None).map_err(na)?;
    let mut listed: Vec<Value> = listed.as_array().cloned().unwrap_or_default();
    if listed.is_empty() {
        return Err(na(format!(
            "compose service `{service}` (project `{project}`) has no container yet"
        )));
    }
    listed.sort_by_key(|c| {
        c["Labels"][NUMBER]
            .as_str()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    });

    // Every replica is checked, and its new container's config made, before anything changes.
    let mut swaps = Vec::new();
    let mut old_images: Vec<(String, Value)> = Vec::new();
    for c in &listed {
        let id = c["Id"].as_str().unwrap_or_default();
        let inspect = e
            .ok(
                "GET",
                &format!("/containers/{}/json", api::encode(id)),
                None,
            )
            .map_err(na)?;
        let name = container_name(&inspect);
        running(&inspect).map_err(na)?;
        let old_id = inspect["Id"].as_str().unwrap_or(id).to_string();
        let old_image_id = inspect["Image"].as_str().unwrap_or_default().to_string();
        if old_image_id == new_id {
            swaps.push(Swap {
                old_id,
                name,
                stop_timeout: DEFAULT_STOP,
                create: None,
            });
            continue;
        }
        let old_image = match old_images.iter().find(|(i, _)| *i == old_image_id) {
            Some((_, v)) => v.clone(),
            None => {
                let v = e
                    .ok(
                        "GET",
                        &format!("/images/{}/json", api::encode(&old_image_id)),
                        None,
                    )
                    .map_err(|m| na(format!("the image container {name} runs: {m}")))?;
                old_images.push((old_image_id.clone(), v.clone()));
                v
            }
        };
        applicable(&inspect, &old_image, new_image).map_err(na)?;
        swaps.push(Swap {
            old_id,
            name,
            stop_timeout: inspect["Config"]["StopTimeout"]
                .as_u64()
                .unwrap_or(DEFAULT_STOP),
            create: Some(create_body(&inspect, &old_image, new_image)),
        });
    }
    // No other container may live in a replaced one's network namespace.
    let all = e
        .ok("GET", "/containers/json?all=1", None)
        .map_err(na)?
        .as_array()
        .cloned()
        .unwrap_or_default();
    for s in swaps.iter().filter(|s| s.create.is_some()) {
        if let Some(other) = sharing_network(&all, &s.old_id, &s.name) {
            return Err(na(format!(
                "container {other} shares the network of {} (network_mode: service/container)",
                s.name
            )));
        }
    }
    Ok(swaps)
}

/// Stop the old, rename it aside, give the new its name, start it, remove the old; put the old
/// back when the new does not start.
fn swap(e: &Engine<'_>, service: &str, s: &Swap, new: &str) -> Result<(), String> {
    let old = api::encode(&s.old_id);
    let aside = format!("{}_old_{}", s.name, short(&s.old_id));
    let stop_within = Duration::from_secs(s.stop_timeout) + api::TIMEOUT;
    let step = |what: &str, r: Result<Value, String>| r.map_err(|m| format!("{what}: {m}"));
    // Until the new one started: undo, and say what runs now.
    let undo = |m: String, renamed: bool| -> String {
        let _ = e.ok(
            "DELETE",
            &format!("/containers/{}?force=1", api::encode(new)),
            None,
        );
        let back = (|| {
            if renamed {
                e.ok(
                    "POST",
                    &format!(
                        "/containers/{old}/rename{}",
                        api::query(&[("name", &s.name)])
                    ),
                    None,
                )?;
            }
            e.ok("POST", &format!("/containers/{old}/start"), None)
        })();
        match back {
            Ok(_) => format!("{m}; the old container runs again"),
            Err(b) => format!(
                "{m}; and starting the old container again failed: {b}\n  hint: `docker-compose up -d {service}` makes the service's container again"
            ),
        }
    };
    if let Err(m) = step(
        "stop",
        e.ok_within(
            "POST",
            &format!(
                "/containers/{old}/stop{}",
                api::query(&[("t", &s.stop_timeout.to_string())])
            ),
            None,
            stop_within,
        ),
    ) {
        return Err(undo(m, false));
    }
    if let Err(m) = step(
        "rename the old container aside",
        e.ok(
            "POST",
            &format!(
                "/containers/{old}/rename{}",
                api::query(&[("name", &aside)])
            ),
            None,
        ),
    ) {
        return Err(undo(m, false));
    }
    let new_path = format!("/containers/{}", api::encode(new));
    if let Err(m) = step(
        "rename the new container",
        e.ok(
            "POST",
            &format!("{new_path}/rename{}", api::query(&[("name", &s.name)])),
            None,
        ),
    ) {
        return Err(undo(m, true));
    }
    if let Err(m) = step(
        "start",
        e.ok_within(
            "POST",
            &format!("{new_path}/start"),
            None,
            Duration::from_secs(60),
        ),
    ) {
        return Err(undo(m, true));
    }
    e.ok("DELETE", &format!("/containers/{old}"), None)
        .map(|_| ())
        .map_err(|m| {
            format!(
                "the new container runs, but the old one ({aside}) could not be removed: {m}\n  hint: docker rm {aside}"
            )
        })
}

/// Creates a container named `name` and connects its other networks; its id. A container that
/// could not be connected is removed again.
fn create(e: &Engine<'_>, name: &str, c: &Created) -> Result<String, String> {
    let made = e.ok(
        "POST",
        &format!("/containers/create{}", api::query(&[("name", name)])),
        Some(&c.body),
    )?;
    let id = made["Id"]
        .as_str()
        .ok_or("the engine gave no container id")?
        .to_string();
    for (network, endpoint) in &c.connect {
        let body = json!({ "Container": id, "EndpointConfig": endpoint });
        if let Err(m) = e.ok(
            "POST",
            &format!("/networks/{}/connect", api::encode(network)),
            Some(&body),
        ) {
            remove_all(e, [&id]);
            return Err(format!("network {network}: {m}"));
        }
    }
    Ok(id)
}

fn remove_all<'a>(e: &Engine<'_>, ids: impl IntoIterator<Item = &'a String>) {
    for id in ids {
        let _ = e.ok(
            "DELETE",
            &format!("/containers/{}?force=1", api::encode(id)),
            None,
        );
    }
}

/// The first 12 hex digits of an id (`sha256:` left out), as Docker shortens ids.
fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

fn container_name(inspect: &Value) -> String {
    inspect["Name"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_string()
}

/// The name of a container (of `all`, as `GET /containers/json` lists them) that lives in the
/// network namespace of container `id` (named `name`), if one does.
fn sharing_network(all: &[Value], id: &str, name: &str) -> Option<String> {
    let other = all.iter().find(|c| {
        c["HostConfig"]["NetworkMode"]
            .as_str()
            .and_then(|m| m.strip_prefix("container:"))
            .is_some_and(|m| m == id || m == name || (m.len() >= 12 && id.starts_with(m)))
    })?;
    Some(
        other["Names"][0]
            .as_str()
            .unwrap_or("?")
            .trim_start_matches('/')
            .to_string(),
    )
}

/// Why a container is not running, if it is not.
fn running(inspect: &Value) -> Result<(), String> {
    let state = &inspect["State"];
    let status = state["Status"].as_str().unwrap_or("unknown");
    if state["Running"] == true && state["Paused"] != true && state["Restarting"] != true {
        return Ok(());
    }
    Err(format!(
        "container {} is {status}, not running",
        container_name(inspect)
    ))
}

/// Null, `""`, `[]` and `{}` say the same in an image config.
fn normal(v: &Value) -> &Value {
    match v {
        Value::String(s) if s.is_empty() => &Value::Null,
        Value::Array(a) if a.is_empty() => &Value::Null,
        Value::Object(o) if o.is_empty() => &Value::Null,
        v => v,
    }
}

/// Why a copy of the container with the new image would not be what Compose makes, if it would not.
fn applicable(inspect: &Value, old_image: &Value, new_image: &Value) -> Result<(), String> {
    let name = container_name(inspect);
    let mode = inspect["HostConfig"]["NetworkMode"]
        .as_str()
        .unwrap_or_default();
    if mode.starts_with("container:") {
        return Err(format!(
            "container {name} runs in another container's network (network_mode: service/container)"
        ));
    }
    if let Some(volumes) = normal(&new_image["Config"]["Volumes"]).as_object() {
        let paths: Vec<&str> = volumes.keys().map(String::as_str).collect();
        return Err(format!(
            "the new image declares VOLUME {}: compose carries the old container's anonymous volumes over",
            paths.join(", ")
        ));
    }
    for m in inspect["Mounts"].as_array().into_iter().flatten() {
        if m["Type"] == "volume" && !named_mount(inspect, m) {
            return Err(format!(
                "container {name} has an anonymous volume at {}: compose carries it over",
                m["Destination"].as_str().unwrap_or("?")
            ));
        }
    }
    let (old, new) = (&old_image["Config"], &new_image["Config"]);
    for (field, instruction) in MERGED {
        if normal(&old[field]) != normal(&new[field]) {
            return Err(format!(
                "the new image's {instruction} differs from the running image's ({} -> {}): a container's config merges its image's",
                old[field], new[field]
            ));
        }
    }
    Ok(())
}

/// Whether a volume mount is named in the container's own config (a `Binds` entry or a
/// `Mounts` entry with a source), not an anonymous volume made for it.
fn named_mount(inspect: &Value, m: &Value) -> bool {
    let dest = m["Destination"].as_str().unwrap_or_default();
    let host = &inspect["HostConfig"];
    let in_binds = host["Binds"].as_array().into_iter().flatten().any(|b| {
        let parts: Vec<&str> = b.as_str().unwrap_or_default().split(':').collect();
        parts.len() >= 2 && parts[1] == dest && !parts[0].is_empty()
    });
    let in_mounts = host["Mounts"].as_array().into_iter().flatten().any(|x| {
        x["Target"].as_str() == Some(dest) && x["Source"].as_str().is_some_and(|s| !s.is_empty())
    });
    in_binds || in_mounts
}

/// The container's labels with the old image's (same key and value) replaced by the new image's,
/// and Compose v2's image label naming the new image when it named the old one.
fn labels(container: &Value, old_image: &Value, new_image: &Value) -> Map<String, Value> {
    let mut out = container["Config"]["Labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if out.get(IMAGE).and_then(Value::as_str).is_some()
        && out.get(IMAGE) == Some(&container["Image"])
    {
        out.insert(IMAGE.into(), new_image["Id"].clone());
    }
    let (old_image, new_image) = (
        &old_image["Config"]["Labels"],
        &new_image["Config"]["Labels"],
    );
    for (k, v) in old_image.as_object().into_iter().flatten() {
        if out.get(k) == Some(v) {
            out.remove(k);
        }
    }
    for (k, v) in new_image.as_object().into_iter().flatten() {
        if !out.contains_key(k) {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// A legacy link as inspect shows it (`/child:/parent/alias`) as create takes it (`child:alias`).
fn create_link(link: &str) -> String {
    match link.split_once(':') {
        Some((child, alias)) => format!(
            "{}:{}",
            child.trim_start_matches('/'),
            alias.rsplit('/').next().unwrap_or(alias)
        ),
        None => link.trim_start_matches('/').to_string(),
    }
}

/// The endpoint config a network of the old container gives the new one: its aliases (not the
/// old short id, which the engine added for the old container), static addresses, links and
/// driver options.
fn endpoint(ep: &Value, old_short: &str) -> Value {
    let mut out = Map::new();
    let aliases: Vec<Value> = ep["Aliases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a.as_str() != Some(old_short))
        .cloned()
        .collect();
    if !aliases.is_empty() {
        out.insert("Aliases".into(), Value::Array(aliases));
    }
    for key in ["IPAMConfig", "Links", "DriverOpts"] {
        if !normal(&ep[key]).is_null() {
            out.insert(key.into(), ep[key].clone());
        }
    }
    Value::Object(out)
}

/// The create body (and the networks to connect before the start) of the container that takes
/// over from `inspect` with `new_image`.
fn create_body(inspect: &Value, old_image: &Value, new_image: &Value) -> Created {
    let old_id = inspect["Id"].as_str().unwrap_or_default();
    let old_short = short(old_id);
    let mut config = inspect["Config"].as_object().cloned().unwrap_or_default();
    config.insert(
        "Image".into(),
        new_image["Id"].as_str().unwrap_or_default().into(),
    );
    if config.get("Hostname").and_then(Value::as_str) == Some(old_short) {
        config.remove("Hostname");
    }
    let l = labels(inspect, old_image, new_image);
    config.insert("Labels".into(), Value::Object(l));

    let mut host = inspect["HostConfig"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if let Some(links) = host.get("Links").and_then(Value::as_array) {
        let links: Vec<Value> = links
            .iter()
            .filter_map(Value::as_str)
            .map(|l| Value::String(create_link(l)))
            .collect();
        host.insert("Links".into(), Value::Array(links));
    }
    config.insert("HostConfig".into(), Value::Object(host));

    let mode = inspect["HostConfig"]["NetworkMode"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let builtin: BTreeSet<&str> = ["", "default", "bridge", "host", "none"].into();
    let mut connect = Vec::new();
    for (name, ep) in inspect["NetworkSettings"]["Networks"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let is_primary = *name == mode
            || ep["NetworkID"].as_str().is_some_and(|id| id == mode)
            || (name == "bridge" && mode == "default");
        if is_primary {
            if !builtin.contains(mode.as_str()) {
                config.insert(
                    "NetworkingConfig".into(),
                    json!({ "EndpointsConfig": { name: endpoint(ep, old_short) } }),
                );
            }
        } else {
            connect.push((name.clone(), endpoint(ep, old_short)));
        }
    }
    Created {
        body: Value::Object(config),
        connect,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A container as `GET /containers/{id}/json` shows one Compose v1 made (trimmed).
    fn inspect() -> Value {
        json!({
            "Id": "c64c86c572d8e403d3222ad9af6d7eeabe50f1f5416a4fcae8f588f3015d2278",
            "Name": "/p_web_1",
            "State": { "Status": "running", "Running": true, "Paused": false, "Restarting": false },
            "Image": "sha256:f8545c51f69741c55bef4677e934c6c1043839c2188665bfb65fe402cea3b5dd",
            "HostConfig": {
                "Binds": ["data:/data:rw"],
                "NetworkMode": "p_default",
                "PortBindings": { "8080/tcp": [{ "HostIp": "", "HostPort": "18080" }] },
                "RestartPolicy": { "Name": "unless-stopped", "MaximumRetryCount": 0 },
                "Links": ["/p_db_1:/p_web_1/db"],
                "LogConfig": { "Type": "json-file", "Config": {} }
            },
            "Mounts": [{ "Type": "volume", "Name": "data", "Destination": "/data" }],
            "Config": {
                "Hostname": "c64c86c572d8",
                "Env": ["FOO=bar", "PATH=/usr/bin"],
                "Cmd": ["node", "server.js"],
                "Image": "rpltest:latest",
                "ExposedPorts": { "8080/tcp": {} },
                "Labels": {
                    "com.docker.compose.config-hash": "8a6e",
                    "com.docker.compose.service": "web",
                    "com.kodingcaravan.images.key": "k1",
                    "base.label": "same",
                    "my.label": "x"
                }
            },
            "NetworkSettings": { "Networks": {
                "p_default": {
                    "Aliases": ["web", "c64c86c572d8"],
                    "IPAMConfig": null,
                    "Links": null,
                    "NetworkID": "56ee40d6",
                    "IPAddress": "172.22.0.2",
                    "MacAddress": "02:42:ac:16:00:02"
                },
                "p_back": {
                    "Aliases": ["web", "api", "c64c86c572d8"],
                    "IPAMConfig": { "IPv4Address": "10.9.0.5" },
                    "NetworkID": "9a1f"
                }
            }}
        })
    }

    fn image(id: &str, key: &str) -> Value {
        json!({
            "Id": id,
            "Config": {
                "Env": ["PATH=/usr/bin"],
                "Cmd": ["node", "server.js"],
                "ExposedPorts": { "8080/tcp": {} },
                "OnBuild": null,
                "Volumes": null,
                "Labels": { "com.kodingcaravan.images.key": key, "base.label": "same" }
            }
        })
    }

    const NEW: &str = "sha256:122538b812b144c798667c81790a9d82c22ffa62e28fbd91f80b5afa6e88ad9f";

    #[test]
    fn the_new_container_is_the_old_one_with_the_new_image() {
        let old_image = image("sha256:f854", "k1");
        let new_image = image(NEW, "k2");
        let c = create_body(&inspect(), &old_image, &new_image);
        let b = &c.body;
        assert_eq!(b["Image"], NEW);
        // Docker's own hostname (the old short id) is left to Docker.
        assert!(b.get("Hostname").is_none(), "{b:#}");
        assert_eq!(b["Env"], json!(["FOO=bar", "PATH=/usr/bin"]));
        assert_eq!(b["Cmd"], json!(["node", "server.js"]));
        // Compose's labels as they were; the image's labels from the new image.
        assert_eq!(
            b["Labels"],
            json!({
                "com.docker.compose.config-hash": "8a6e",
                "com.docker.compose.service": "web",
                "my.label": "x",
                "com.kodingcaravan.images.key": "k2",
                "base.label": "same"
            })
        );
        let h = &b["HostConfig"];
        assert_eq!(h["PortBindings"]["8080/tcp"][0]["HostPort"], "18080");
        assert_eq!(h["RestartPolicy"]["Name"], "unless-stopped");
        assert_eq!(h["Binds"], json!(["data:/data:rw"]));
        assert_eq!(h["Links"], json!(["p_db_1:db"]));
        // The primary network at create, with its aliases but not the old short id; the other
        // connected before the start, with its static address.
        assert_eq!(
            b["NetworkingConfig"],
            json!({ "EndpointsConfig": { "p_default": { "Aliases": ["web"] } } })
        );
        assert_eq!(
            c.connect,
            vec![(
                "p_back".to_string(),
                json!({ "Aliases": ["web", "api"], "IPAMConfig": { "IPv4Address": "10.9.0.5" } })
            )]
        );
    }

    #[test]
    fn a_hostname_of_its_own_is_kept() {
        let mut i = inspect();
        i["Config"]["Hostname"] = json!("web.local");
        let c = create_body(&i, &image("sha256:f854", "k1"), &image(NEW, "k2"));
        assert_eq!(c.body["Hostname"], "web.local");
    }

    #[test]
    fn a_label_the_old_image_did_not_give_stays_the_containers() {
        // Compose set `com.kodingcaravan.images.key` itself (another value than the image's).
        let mut i = inspect();
        i["Config"]["Labels"]["com.kodingcaravan.images.key"] = json!("mine");
        let l = labels(&i, &image("a", "k1"), &image("b", "k2"));
        assert_eq!(l["com.kodingcaravan.images.key"], "mine");
        // A label only the old image had goes away.
        let mut old = image("a", "k1");
        old["Config"]["Labels"]["gone"] = json!("1");
        let mut i = inspect();
        i["Config"]["Labels"]["gone"] = json!("1");
        let l = labels(&i, &old, &image("b", "k2"));
        assert!(!l.contains_key("gone"));
    }

    #[test]
    fn compose_v2s_image_label_names_the_new_image() {
        let mut i = inspect();
        let old_id = i["Image"].clone();
        i["Config"]["Labels"]["com.docker.compose.image"] = old_id.clone();
        let l = labels(
            &i,
            &image(old_id.as_str().expect("id"), "k1"),
            &image(NEW, "k2"),
        );
        assert_eq!(l["com.docker.compose.image"], NEW);
        // Another value (a manifest digest) is not the old image's id: kept.
        i["Config"]["Labels"]["com.docker.compose.image"] = json!("sha256:0123");
        let l = labels(&i, &image("x", "k1"), &image(NEW, "k2"));
        assert_eq!(l["com.docker.compose.image"], "sha256:0123");
    }

    #[test]
    fn on_the_default_bridge_no_endpoint_is_given() {
        let mut i = inspect();
        i["HostConfig"]["NetworkMode"] = json!("default");
        i["NetworkSettings"]["Networks"] =
            json!({ "bridge": { "Aliases": null, "NetworkID": "b1" } });
        let c = create_body(&i, &image("a", "k1"), &image(NEW, "k2"));
        assert!(c.body.get("NetworkingConfig").is_none());
        assert!(c.connect.is_empty());
    }

    #[test]
    fn only_an_image_of_the_same_config_is_applicable() {
        let (i, old) = (inspect(), image("sha256:f854", "k1"));
        assert_eq!(applicable(&i, &old, &image(NEW, "k2")), Ok(()));
        // Labels differ only: fine; an empty list is no list.
        let mut new = image(NEW, "k2");
        new["Config"]["OnBuild"] = json!([]);
        assert_eq!(applicable(&i, &old, &new), Ok(()));
        for (field, value, says) in [
            ("Cmd", json!(["node", "other.js"]), "CMD"),
            ("Env", json!(["PATH=/usr/bin", "X=1"]), "ENV"),
            ("Entrypoint", json!(["tini", "--"]), "ENTRYPOINT"),
            ("User", json!("nodejs"), "USER"),
            ("Healthcheck", json!({ "Test": ["NONE"] }), "HEALTHCHECK"),
            ("Volumes", json!({ "/data": {} }), "VOLUME /data"),
        ] {
            let mut new = image(NEW, "k2");
            new["Config"][field] = value;
            let err = applicable(&i, &old, &new).expect_err(field);
            assert!(err.contains(says), "{field}: {err}");
        }
        // An anonymous volume of the container (not in its binds), another container's network.
        let mut anon = inspect();
        anon["Mounts"] = json!([{ "Type": "volume", "Name": "3f9a", "Destination": "/cache" }]);
        let err = applicable(&anon, &old, &image(NEW, "k2")).expect_err("anonymous");
        assert!(err.contains("anonymous volume at /cache"), "{err}");
        let mut shared = inspect();
        shared["HostConfig"]["NetworkMode"] = json!("container:c0ffee");
        let err = applicable(&shared, &old, &image(NEW, "k2")).expect_err("shared");
        assert!(err.contains("network_mode"), "{err}");
    }

    #[test]
    fn a_stopped_or_paused_container_is_not_running() {
        let mut i = inspect();
        assert_eq!(running(&i), Ok(()));
        i["State"] = json!({ "Status": "exited", "Running": false });
        assert_eq!(
            running(&i),
            Err("container p_web_1 is exited, not running".into())
        );
        i["State"] = json!({ "Status": "paused", "Running": true, "Paused": true });
        assert!(running(&i).is_err());
    }

    #[test]
    fn a_container_in_its_network_is_found_by_id_or_name() {
        let id = "c64c86c572d8e403d3222ad9af6d7eeabe50f1f5416a4fcae8f588f3015d2278";
        let list = |mode: &str| {
            vec![
                json!({ "Names": ["/p_web_1"], "HostConfig": { "NetworkMode": "p_default" } }),
                json!({ "Names": ["/p_side_1"], "HostConfig": { "NetworkMode": mode } }),
            ]
        };
        for mode in [
            format!("container:{id}"),
            "container:c64c86c572d8".to_string(),
            "container:p_web_1".to_string(),
        ] {
            assert_eq!(
                sharing_network(&list(&mode), id, "p_web_1").as_deref(),
                Some("p_side_1"),
                "{mode}"
            );
        }
        assert_eq!(sharing_network(&list("host"), id, "p_web_1"), None);
        assert_eq!(sharing_network(&list("container:c6"), id, "p_web_1"), None);
    }

    #[test]
    fn links_as_create_takes_them() {
        assert_eq!(create_link("/p_db_1:/p_web_1/db"), "p_db_1:db");
        assert_eq!(create_link("p_db_1:db"), "p_db_1:db");
        assert_eq!(short(NEW), "122538b812b1");
        assert_eq!(short("c64c86c572d8e403"), "c64c86c572d8");
    }
}

//! Tests of replacing a compose service's containers over the Engine API
//! (`engine::watch::replace`), with real Docker and real Compose v1 as the oracles: the replaced
//! container is the one Compose itself makes with the new image (compared field by field), the
//! other service reaches it by name through Docker's DNS, `docker-compose ps` and `down` treat it
//! as theirs, and what does not apply or fails leaves the running containers as they were.

use std::path::PathBuf;
use std::process::Command;

use engine::execute::KEY_LABEL;
use engine::watch::compose::Compose;
use engine::watch::replace::Replace;
use serde_json::{json, Value};
use tests::{docker, docker_ok, docker_out, remove_images};

/// A compose `command` that idles and stops at once on SIGTERM.
const IDLE: &str = r#"["node", "-e", "process.on('SIGTERM', () => process.exit(0)); setInterval(() => {}, 1000)"]"#;

/// A health-checked HTTP server answering the content of `/app/answer.txt`, from the
/// `node:18-alpine` stand-in; `extra` lines change its config.
fn dockerfile(extra: &str) -> String {
    format!(
        "FROM node:18-alpine\nWORKDIR /app\nCOPY answer.txt /app/answer.txt\nENV PORT=8080\nEXPOSE 8080\nHEALTHCHECK --interval=30s CMD {}\nCMD {}\n{extra}",
        r#"node -e "require('http').get('http://127.0.0.1:8080/', (r) => process.exit(r.statusCode === 200 ? 0 : 1)).on('error', () => process.exit(1))""#,
        r#"["node", "-e", "process.on('SIGTERM', () => process.exit(0)); const b = require('fs').readFileSync('/app/answer.txt', 'utf8').trim(); require('http').createServer((q, r) => r.end(b)).listen(+process.env.PORT)"]"#
    )
}

/// A compose project in a directory of its own (its name is the project's), with images named
/// by a prefix of its own; everything is removed on drop.
struct Stack {
    _dir: tempfile::TempDir,
    root: PathBuf,
    project: String,
    prefix: String,
}

impl Stack {
    /// `web` (a published port, env, labels, restart policy, a second network with an alias)
    /// and `client` (the stand-in, idle), and `extra` services.
    fn new(tag: &str, extra: &str) -> Stack {
        tests::require_docker();
        let compose_ok = Command::new("docker-compose").arg("version").output();
        assert!(
            compose_ok.is_ok_and(|o| o.status.success()),
            "these tests need docker-compose (apt-get install docker-compose)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let project = format!("kcrpl{}{tag}", std::process::id());
        let root = dir.path().join(&project);
        std::fs::create_dir(&root).expect("mkdir");
        let prefix = format!("{project}-");
        let stack = Stack {
            _dir: dir,
            root,
            project,
            prefix,
        };
        let compose = format!(
            r#"services:
  web:
    image: {prefix}web:latest
    ports: ["127.0.0.1::8080"]
    environment:
      GREETING: hello
    labels:
      my.label: mine
    restart: unless-stopped
    networks:
      default:
      back:
        aliases: [api]
  client:
    image: node:18-alpine
    command: {IDLE}
{extra}networks:
  back: {{}}
"#,
            prefix = stack.prefix
        );
        std::fs::write(stack.root.join("docker-compose.yml"), compose).expect("write compose");
        stack
    }

    /// Builds the image answering `answer` with `extra` Dockerfile lines as `<prefix><name>`;
    /// its id.
    fn image(&self, name: &str, answer: &str, extra: &str) -> String {
        let dir = self.root.join("images").join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("Dockerfile"), dockerfile(extra)).expect("write");
        std::fs::write(dir.join("answer.txt"), format!("{answer}\n")).expect("write");
        let reference = format!("{}{name}", self.prefix);
        let out = docker()
            .args(["build", "-q", "-t", &reference, "--label"])
            .arg(format!("{KEY_LABEL}={name}"))
            .arg(&dir)
            .output()
            .expect("docker build");
        assert!(
            out.status.success(),
            "docker build: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        docker_ok(&["image", "inspect", "--format", "{{.Id}}", &reference])
    }

    fn tag_latest(&self, name: &str) {
        docker_ok(&[
            "tag",
            &format!("{}{name}", self.prefix),
            &format!("{}web:latest", self.prefix),
        ]);
    }

    fn compose_file(&self) -> PathBuf {
        self.root.join("docker-compose.yml")
    }

    fn compose(&self, args: &[&str]) -> String {
        let out = Command::new("docker-compose")
            .current_dir(&self.root)
            .args(args)
            .output()
            .expect("docker-compose");
        assert!(
            out.status.success(),
            "docker-compose {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The engine's `Compose` for the project (the client found as `--up` finds it).
    fn client(&self) -> Compose {
        let d = engine::execute::docker::Docker::detect().expect("docker");
        Compose::detect(&d.client, &self.compose_file()).expect("compose")
    }

    /// The ids of the service's containers (any state), by container number.
    fn containers(&self, service: &str) -> Vec<String> {
        let ids = docker_ok(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.project),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
        ]);
        let mut v: Vec<(u64, String)> = ids
            .lines()
            .map(|id| {
                let n = inspect(id)["Config"]["Labels"]["com.docker.compose.container-number"]
                    .as_str()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                (n, id.to_string())
            })
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// Every container of the project, by name.
    fn all_names(&self) -> Vec<String> {
        let mut v: Vec<String> = docker_ok(&[
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
            "--filter",
            &format!("name={}", self.project),
        ])
        .lines()
        .map(String::from)
        .collect();
        v.sort();
        v
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = Command::new("docker-compose")
            .current_dir(&self.root)
            .args(["down", "--timeout", "1"])
            .output();
        if let Ok(out) = docker()
            .args(["ps", "-aq", "--filter"])
            .arg(format!("name={}", self.project))
            .output()
        {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(String::from)
                .collect();
            if !ids.is_empty() {
                let _ = docker().args(["rm", "-f"]).args(&ids).output();
            }
        }
        for net in ["default", "back"] {
            let _ = docker()
                .args(["network", "rm", &format!("{}_{net}", self.project)])
                .output();
        }
        remove_images(&self.prefix);
    }
}

fn inspect(id: &str) -> Value {
    let text = docker_ok(&["inspect", "--type", "container", id]);
    let v: Value = serde_json::from_str(&text).expect("inspect JSON");
    v[0].clone()
}

fn short(id: &str) -> &str {
    &id[..12]
}

/// What Compose decides of a container, without what differs between any two containers (id,
/// times, state, addresses, the hostname Docker gave it, the short id among its aliases) or
/// between a reference and an id (`Config.Image`), and without Compose's `config-hash`.
fn comparable(c: &Value) -> Value {
    let id = c["Id"].as_str().expect("id");
    let mut config = c["Config"].clone();
    let own_hostname = config["Hostname"] == short(id);
    let o = config.as_object_mut().expect("config");
    o.remove("Image");
    o.remove("Hostname");
    if let Some(l) = o.get_mut("Labels").and_then(Value::as_object_mut) {
        l.remove("com.docker.compose.config-hash");
    }
    let mut networks = serde_json::Map::new();
    for (name, ep) in c["NetworkSettings"]["Networks"]
        .as_object()
        .expect("networks")
    {
        let mut aliases: Vec<String> = ep["Aliases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|a| *a != short(id))
            .map(String::from)
            .collect();
        aliases.sort();
        networks.insert(
            name.clone(),
            json!({
                "Aliases": aliases,
                "IPAMConfig": ep["IPAMConfig"],
                "Links": ep["Links"],
                "DriverOpts": ep["DriverOpts"],
                "short id alias": ep["Aliases"].as_array().is_some_and(|a| a.iter().any(|x| x == short(id))),
            }),
        );
    }
    json!({
        "Name": c["Name"],
        "Config": config,
        "hostname is its short id": own_hostname,
        "HostConfig": c["HostConfig"],
        "Mounts": c["Mounts"],
        "Networks": networks,
    })
}

/// An HTTP GET of `/` at `addr`: the body; `None` when nothing answers (yet).
fn get(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut b = String::new();
    s.read_to_string(&mut b).ok()?;
    b.split("\r\n\r\n")
        .nth(1)
        .filter(|a| !a.is_empty())
        .map(String::from)
}

/// What `id` answers, asked on its published port until it answers (it was just started).
fn answer(id: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let port = inspect(id)["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if !port.is_empty() {
            // The port is published before the server inside listens.
            if let Some(a) = get(&format!("127.0.0.1:{port}")) {
                return a;
            }
        }
        assert!(std::time::Instant::now() < deadline, "{id} does not answer");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// What the client container gets from `web` by service name (Docker's DNS), until it answers.
fn answer_by_name(client: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = docker_out(&["exec", client, "wget", "-qO-", "http://web:8080/"]);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "web does not answer the client: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn replaced_containers_are_the_ones_compose_makes_with_the_new_image() {
    let _guard = tests::docker_lock();
    let stack = Stack::new("same", "");
    let one = stack.image("one", "one", "");
    let two = stack.image("two", "two", "");
    stack.tag_latest("one");
    stack.compose(&["up", "-d", "--scale", "web=2"]);
    let old = stack.containers("web");
    assert_eq!(old.len(), 2);
    let old_inspect: Vec<Value> = old.iter().map(|id| inspect(id)).collect();
    let client = stack.containers("client")[0].clone();
    let compose = stack.client();

    let t = std::time::Instant::now();
    let new = compose.replace("web", &two).expect("replaced");
    eprintln!(
        "replaced 2 replicas in {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(new.len(), 2);
    assert_eq!(stack.containers("web"), new, "new containers, by number");
    for (o, id) in old.iter().zip(&new) {
        assert_ne!(o, id);
        assert!(
            !docker_out(&["inspect", o]).status.success(),
            "old {o} removed"
        );
    }
    for (before, id) in old_inspect.iter().zip(&new) {
        let c = inspect(id);
        assert_eq!(c["Image"], two.as_str());
        assert_eq!(c["Name"], before["Name"]);
        assert_eq!(c["State"]["Running"], true);
        let env = c["Config"]["Env"].as_array().expect("env");
        assert!(env.contains(&json!("GREETING=hello")), "{env:?}");
        assert_eq!(c["Config"]["Env"], before["Config"]["Env"]);
        let labels = &c["Config"]["Labels"];
        assert_eq!(labels["my.label"], "mine");
        assert_eq!(labels[KEY_LABEL], "two", "the new image's label");
        for (k, v) in before["Config"]["Labels"].as_object().expect("labels") {
            if k.starts_with("com.docker.compose.") {
                assert_eq!(&labels[k], v, "{k}");
            }
        }
        assert_eq!(c["HostConfig"], before["HostConfig"]);
        assert_eq!(
            c["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostIp"],
            "127.0.0.1"
        );
        assert_eq!(c["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");
        assert_eq!(c["Config"]["Hostname"], short(id));
        let nets = &c["NetworkSettings"]["Networks"];
        let project = &stack.project;
        let aliases = |net: &str| -> Vec<String> {
            let mut a: Vec<String> = nets[net]["Aliases"]
                .as_array()
                .unwrap_or_else(|| panic!("{net} in {nets}"))
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect();
            a.sort();
            a
        };
        let mut want = vec!["web".to_string(), short(id).to_string()];
        want.sort();
        assert_eq!(aliases(&format!("{project}_default")), want);
        want.push("api".into());
        want.sort();
        assert_eq!(aliases(&format!("{project}_back")), want);
        assert_eq!(answer(id), "two");
    }
    // Nothing left behind under a temporary name.
    let names = stack.all_names();
    assert!(
        names
            .iter()
            .all(|n| !n.contains("_new_") && !n.contains("_old_")),
        "{names:?}"
    );
    // The other service reaches it by service name, and gets the new answer from each replica.
    for _ in 0..4 {
        assert_eq!(answer_by_name(&client), "two");
    }
    // Compose lists the new containers as the service's.
    let mut listed: Vec<String> = stack
        .compose(&["ps", "-q", "web"])
        .lines()
        .map(String::from)
        .collect();
    listed.sort();
    let mut sorted = new.clone();
    sorted.sort();
    assert_eq!(listed, sorted);

    // Compose v1 afterwards: while `latest` is the old image, `up -d` leaves them alone (its
    // config hash covers the tag's image, which did not change) ...
    stack.compose(&["up", "-d", "--scale", "web=2"]);
    assert_eq!(stack.containers("web"), new);
    // ... once `latest` is the new image, the first `up -d` recreates them once, as they are.
    stack.tag_latest("two");
    stack.compose(&["up", "-d", "--scale", "web=2"]);
    let by_compose = stack.containers("web");
    assert_ne_all(&by_compose, &new);
    for id in &by_compose {
        assert_eq!(inspect(id)["Image"], two.as_str());
    }
    stack.compose(&["up", "-d", "--scale", "web=2"]);
    assert_eq!(stack.containers("web"), by_compose, "then nothing");

    // Put the old image back with a replace, and compare with what Compose makes of it.
    let ours: Vec<Value> = compose
        .replace("web", &one)
        .expect("replaced back")
        .iter()
        .map(|id| inspect(id))
        .collect();
    assert_eq!(answer_by_name(&client), "one");
    stack.tag_latest("one");
    stack.compose(&["up", "-d", "--scale", "web=2"]);
    let theirs: Vec<Value> = stack
        .containers("web")
        .iter()
        .map(|id| inspect(id))
        .collect();
    for (o, t) in ours.iter().zip(&theirs) {
        assert_ne!(o["Id"], t["Id"], "compose recreated it");
        assert_eq!(o["Image"], t["Image"]);
        assert_eq!(comparable(o), comparable(t));
    }
    // A replace with the image a container already runs keeps it.
    let kept = compose.replace("web", &one).expect("kept");
    assert_eq!(kept, stack.containers("web"));

    // `down` removes what a replace made.
    compose.replace("web", &two).expect("replaced");
    stack.compose(&["down", "--timeout", "1"]);
    assert_eq!(stack.all_names(), Vec::<String>::new());
}

fn assert_ne_all(a: &[String], b: &[String]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_ne!(x, y, "recreated");
    }
}

#[test]
fn what_does_not_apply_or_fails_changes_nothing() {
    let _guard = tests::docker_lock();
    // `side` lives in web's network namespace (started later).
    let side = format!(
        "  side:\n    image: node:18-alpine\n    network_mode: service:web\n    command: {IDLE}\n"
    );
    let stack = Stack::new("no", &side);
    stack.image("one", "one", "");
    let two = stack.image("two", "two", "");
    let cmd = stack.image("cmd", "cmd", "CMD [\"node\", \"-e\", \"0\"]\n");
    let env = stack.image("env", "env", "ENV X=1\n");
    let volume = stack.image("volume", "volume", "VOLUME /data\n");
    stack.tag_latest("one");
    stack.compose(&["up", "-d", "web", "client"]);
    let web = stack.containers("web");
    let compose = stack.client();
    let unchanged = |what: &str| {
        assert_eq!(stack.containers("web"), web, "{what}");
        assert_eq!(inspect(&web[0])["State"]["Running"], true, "{what}");
        assert_eq!(answer(&web[0]), "one", "{what}");
        let names = stack.all_names();
        assert!(
            names
                .iter()
                .all(|n| !n.contains("_new_") && !n.contains("_old_")),
            "{what}: {names:?}"
        );
    };
    let not_applicable = |image: &str, says: &str| match compose.replace("web", image) {
        Err(Replace::NotApplicable(why)) => assert!(why.contains(says), "{says}: {why}"),
        other => panic!("{says}: {other:?}"),
    };
    not_applicable(&cmd, "CMD");
    unchanged("another CMD");
    not_applicable(&env, "ENV");
    unchanged("another ENV");
    not_applicable(&volume, "VOLUME /data");
    unchanged("a VOLUME");

    // An image the engine does not have.
    let missing = format!("sha256:{}", "0".repeat(64));
    match compose.replace("web", &missing) {
        Err(Replace::Failed(m)) => assert!(m.contains("nothing was changed"), "{m}"),
        other => panic!("{other:?}"),
    }
    unchanged("a missing image");

    // A create the engine refuses (the temporary name is taken): nothing changes.
    let name = inspect(&web[0])["Name"]
        .as_str()
        .expect("name")
        .trim_start_matches('/')
        .to_string();
    let squatter = docker_ok(&[
        "create",
        "--name",
        &format!("{name}_new_{}", &two["sha256:".len()..][..12]),
        "node:18-alpine",
        "true",
    ]);
    match compose.replace("web", &two) {
        Err(Replace::Failed(m)) => {
            assert!(m.contains("nothing was changed"), "{m}");
            assert!(
                m.contains("already in use"),
                "the engine's own message: {m}"
            );
        }
        other => panic!("{other:?}"),
    }
    docker_ok(&["rm", "-f", &squatter]);
    unchanged("a refused create");

    // A step that fails once the old container stopped (the name it is moved aside to is taken):
    // the new one is removed and the old one started again.
    let squatter = docker_ok(&[
        "create",
        "--name",
        &format!("{name}_old_{}", short(&web[0])),
        "node:18-alpine",
        "true",
    ]);
    match compose.replace("web", &two) {
        Err(Replace::Failed(m)) => {
            assert!(m.contains("already in use"), "{m}");
            assert!(m.contains("the old container runs again"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    docker_ok(&["rm", "-f", &squatter]);
    unchanged("a failure after the stop");

    // A service with a stopped container, and one with none.
    let client = stack.containers("client");
    docker_ok(&["stop", "--time", "1", &client[0]]);
    match compose.replace("client", &two) {
        Err(Replace::NotApplicable(why)) => assert!(why.contains("not running"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(stack.containers("client"), client);
    match compose.replace("nothing", &two) {
        Err(Replace::NotApplicable(why)) => assert!(why.contains("no container"), "{why}"),
        other => panic!("{other:?}"),
    }

    // A container in another's network namespace, and one whose namespace another shares.
    stack.compose(&["up", "-d", "--no-deps", "side"]);
    let side = stack.containers("side");
    match compose.replace("side", &two) {
        Err(Replace::NotApplicable(why)) => {
            assert!(why.contains("another container's network"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    match compose.replace("web", &two) {
        Err(Replace::NotApplicable(why)) => assert!(
            why.contains("shares the network of") && why.contains("side"),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(stack.containers("side"), side);
    unchanged("a container in its network");
    stack.compose(&["rm", "--stop", "--force", "side"]);

    // And then it applies.
    let new = compose.replace("web", &two).expect("replaced");
    assert_eq!(answer(&new[0]), "two");
}

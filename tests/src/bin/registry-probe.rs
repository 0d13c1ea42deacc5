//! `registry-probe SPEC head|config IMAGE REFERENCE`: one registry read through
//! `Registry::parse`, which takes its settings from the environment (proxies, CA file, docker
//! config, credential helpers on `PATH`), so the tests can run it as users run the engine.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [spec, op, image, reference] = args.as_slice() else {
        eprintln!("usage: registry-probe SPEC head|config IMAGE REFERENCE");
        std::process::exit(2);
    };
    let result = cache::registry::Registry::parse(spec).and_then(|r| match op.as_str() {
        "head" => r.head_manifest(image, reference),
        "config" => r.config_digest(image, reference),
        _ => {
            eprintln!("unknown operation `{op}`");
            std::process::exit(2);
        }
    });
    match result {
        Ok(Some(d)) => println!("{d}"),
        Ok(None) => println!("absent"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

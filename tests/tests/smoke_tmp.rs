use egress_sim::*;
#[test]
fn smoke() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip1/release/noop_filter.wasm");
    let host = Host::from_file(&path, VmConfig::default(), HostOptions::default()).unwrap();
    let mut d = host.start(vec![PluginConfig::http("h", "egress", "{}"), PluginConfig::network("t", "egress-tcp", "{}")], 2).unwrap();
    let out = d.worker(0).http(&HttpRequest::get("example.com", "/")).unwrap();
    println!("{out:?}");
    let out = d.worker(1).tcp(&TcpStream { downstream: vec![b"hello".to_vec()], ..Default::default() }).unwrap();
    println!("{out:?}");
    println!("live {}", d.worker(0).live_contexts());
    let t = std::time::Instant::now();
    for _ in 0..10000 { d.worker(0).http(&HttpRequest::get("example.com", "/")).unwrap(); }
    println!("per req {:?}", t.elapsed() / 10000);
}

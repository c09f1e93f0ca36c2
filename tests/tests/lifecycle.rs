//! Envoy's lifecycle through hand-written modules: callback order, local replies, resets,
//! pauses, canary rejection, configuration updates, VM failures and the failure policies,
//! start-up checks, timers, shared queues and HTTP callouts.

mod common;

use std::time::Duration;

use common::{host_from_wat, wat_file};
use egress_sim::{
    CalloutResponse, FailurePolicy, Host, HostError, HostOptions, HttpRequest, HttpResponse,
    LogLevel, PluginConfig, StreamResult, TcpStream, VmConfig,
};

fn http_plugin(config: &str) -> PluginConfig {
    PluginConfig::http("test.http", "http", config)
}

fn tcp_plugin(config: &str) -> PluginConfig {
    PluginConfig::network("test.tcp", "tcp", config)
}

fn recorder(config: &str) -> egress_sim::Deployment {
    host_from_wat("recorder.wat")
        .start(vec![http_plugin(config), tcp_plugin(config)], 1)
        .expect("the recorder starts")
}

#[test]
fn start_runs_canary_then_each_worker() {
    let mut deployment = host_from_wat("recorder.wat")
        .start(vec![http_plugin("a")], 2)
        .unwrap();
    let canary: Vec<&str> = deployment
        .canary_logs
        .iter()
        .map(|l| l.message.as_str())
        .collect();
    assert_eq!(canary, ["create", "vm_start", "configure"]);
    for worker in deployment.workers() {
        let logs: Vec<String> = worker
            .take_root_logs()
            .into_iter()
            .map(|l| l.message)
            .collect();
        assert_eq!(logs, ["create", "vm_start", "configure"]);
    }
}

#[test]
fn http_callbacks_run_in_envoy_order() {
    let mut deployment = recorder("a");
    let worker = deployment.worker(0);
    let outcome = worker.http(&HttpRequest::get("example.com", "/")).unwrap();
    assert_eq!(outcome.result, StreamResult::Continued);
    assert_eq!(
        outcome.messages(),
        ["create", "request_headers", "log", "done", "delete"]
    );

    let request = HttpRequest {
        body: Some(b"payload".to_vec()),
        response: Some(HttpResponse {
            status: 200,
            headers: vec![("server".into(), "upstream".into())],
            body: Some(b"ok".to_vec()),
        }),
        ..HttpRequest::get("example.com", "/upload")
    };
    let outcome = worker.http(&request).unwrap();
    assert_eq!(
        outcome.messages(),
        [
            "create",
            "request_headers",
            "request_body",
            "response_headers",
            "response_body",
            "log",
            "done",
            "delete"
        ]
    );
    assert_eq!(outcome.forwarded_bytes, b"payload");
    let forwarded = outcome.forwarded_request_headers.unwrap();
    assert!(forwarded.contains(&(":path".to_string(), "/upload".to_string())));
    // Every stream context is gone: the VM context and the two roots remain.
    assert_eq!(worker.live_contexts(), 3);
}

#[test]
fn local_reply_stops_the_request_and_passes_the_response_hooks() {
    let mut deployment = recorder("d");
    let request = HttpRequest {
        body: Some(b"never read".to_vec()),
        ..HttpRequest::get("example.com", "/")
    };
    let outcome = deployment.worker(0).http(&request).unwrap();
    let reply = outcome.local_reply().expect("a local reply");
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body, b"no");
    assert_eq!(reply.details, "denied_by_test");
    assert_eq!(
        reply.headers,
        [
            ("x-deny".to_string(), "yes".to_string()),
            ("content-length".to_string(), "2".to_string()),
            ("content-type".to_string(), "text/plain".to_string()),
            ("x-seen".to_string(), "1".to_string()),
        ]
    );
    // The module returned Continue after the reply; the request still stopped.
    assert_eq!(
        outcome.messages(),
        [
            "create",
            "request_headers",
            "response_headers",
            "response_body",
            "log",
            "done",
            "delete"
        ]
    );
    assert_eq!(outcome.forwarded_request_headers, None);
    assert_eq!(outcome.status(), Some(403));
}

#[test]
fn reset_and_pause() {
    let mut deployment = recorder("c");
    let outcome = deployment
        .worker(0)
        .http(&HttpRequest::get("a", "/"))
        .unwrap();
    assert_eq!(outcome.result, StreamResult::Reset);
    assert_eq!(
        outcome.messages(),
        ["create", "request_headers", "log", "done", "delete"]
    );

    let mut deployment = recorder("p");
    let request = HttpRequest {
        body: Some(b"held".to_vec()),
        ..HttpRequest::get("a", "/")
    };
    let outcome = deployment.worker(0).http(&request).unwrap();
    assert_eq!(outcome.result, StreamResult::Paused);
    assert_eq!(
        outcome.messages(),
        ["create", "request_headers", "log", "done", "delete"]
    );
    assert!(outcome.forwarded_bytes.is_empty());
}

#[test]
fn tcp_callbacks_and_close() {
    let mut deployment = recorder("a");
    let connection = TcpStream {
        downstream: vec![b"he".to_vec(), b"llo".to_vec()],
        upstream: vec![b"back".to_vec()],
        ..TcpStream::default()
    };
    let outcome = deployment.worker(0).tcp(&connection).unwrap();
    assert_eq!(outcome.result, StreamResult::Continued);
    assert_eq!(outcome.forwarded_bytes, b"hello");
    assert_eq!(
        outcome.messages(),
        [
            "create",
            "new_connection",
            "downstream_data",
            "downstream_data",
            "upstream_data",
            // The server's FIN: upstream data with end_of_stream, then the close (peer Unknown).
            "upstream_data",
            "upstream_close",
            "downstream_close",
            "done",
            "log",
            "delete"
        ]
    );

    let mut deployment = recorder("d");
    let outcome = deployment.worker(0).tcp(&connection).unwrap();
    assert_eq!(outcome.result, StreamResult::Closed);
    assert!(outcome.forwarded_bytes.is_empty());
    assert_eq!(
        outcome.messages(),
        [
            "create",
            "new_connection",
            "downstream_close",
            "done",
            "log",
            "delete"
        ]
    );
}

#[test]
fn canary_rejects_a_configuration_with_the_modules_reason() {
    let host = host_from_wat("recorder.wat");
    let error = host
        .start(vec![http_plugin("r")], 2)
        .err()
        .expect("rejected");
    let HostError::ConfigRejected { plugin, logs } = &error else {
        panic!("unexpected error: {error}");
    };
    assert_eq!(plugin, "test.http");
    let reason = logs
        .iter()
        .find(|l| l.level == LogLevel::Error)
        .expect("an error line");
    assert_eq!(reason.message, "configuration rejected: mode r asks for it");
    assert!(host.canary(&http_plugin("a")).is_ok());
}

#[test]
fn configuration_update_applies_to_new_streams_only_if_accepted() {
    let mut deployment = host_from_wat("recorder.wat")
        .start(vec![http_plugin("a")], 2)
        .unwrap();
    for i in 0..2 {
        let outcome = deployment
            .worker(i)
            .http(&HttpRequest::get("a", "/"))
            .unwrap();
        assert_eq!(outcome.result, StreamResult::Continued);
        deployment.worker(i).take_root_logs();
    }
    deployment
        .update_plugin(http_plugin("d"))
        .expect("accepted");
    for i in 0..2 {
        let worker = deployment.worker(i);
        let logs: Vec<String> = worker
            .take_root_logs()
            .into_iter()
            .map(|l| l.message)
            .collect();
        // New root started and configured, old root done and deleted.
        assert_eq!(logs, ["create", "vm_start", "configure", "done", "delete"]);
        let outcome = worker.http(&HttpRequest::get("a", "/")).unwrap();
        assert_eq!(outcome.status(), Some(403));
        assert_eq!(worker.live_contexts(), 2);
    }
    let error = deployment.update_plugin(http_plugin("r")).unwrap_err();
    assert!(matches!(error, HostError::ConfigRejected { .. }), "{error}");
    let outcome = deployment
        .worker(0)
        .http(&HttpRequest::get("a", "/"))
        .unwrap();
    assert_eq!(
        outcome.status(),
        Some(403),
        "the rejected update changed nothing"
    );
}

fn calls(host: &Host) -> u8 {
    host.shared()
        .data
        .get("", b"calls")
        .map(|(v, _)| v[0])
        .unwrap_or(0)
}

#[test]
fn a_trap_fails_the_stream_closed_and_the_vm_stays_failed() {
    let host = host_from_wat("trap.wat");
    let mut deployment = host
        .start(vec![http_plugin(""), tcp_plugin("")], 1)
        .unwrap();
    let worker = deployment.worker(0);
    let first = worker.http(&HttpRequest::get("a", "/")).unwrap();
    let StreamResult::FailedClosed { error } = &first.result else {
        panic!("expected a failure, got {:?}", first.result);
    };
    assert!(error.contains("proxy_on_request_headers"), "{error}");
    assert!(error.contains("unreachable"), "{error}");
    assert_eq!(first.status(), Some(503));
    assert!(worker.failure().is_some());

    let second = worker.http(&HttpRequest::get("a", "/")).unwrap();
    assert!(matches!(second.result, StreamResult::FailedClosed { .. }));
    let tcp = worker.tcp(&TcpStream::default()).unwrap();
    assert!(matches!(tcp.result, StreamResult::FailedClosed { .. }));
    assert_eq!(calls(&host), 1, "a failed VM is not called again");
}

#[test]
fn fail_open_skips_the_failed_filter() {
    let host = host_from_wat("trap.wat");
    let plugin = http_plugin("").with_failure_policy(FailurePolicy::FailOpen);
    let mut deployment = host.start(vec![plugin], 1).unwrap();
    for _ in 0..2 {
        let outcome = deployment
            .worker(0)
            .http(&HttpRequest::get("a", "/"))
            .unwrap();
        assert!(
            matches!(outcome.result, StreamResult::FailedOpen { .. }),
            "{:?}",
            outcome.result
        );
        assert_eq!(outcome.status(), None);
    }
    assert_eq!(calls(&host), 1);
}

#[test]
fn fail_reload_builds_a_new_vm_after_the_backoff() {
    let host = host_from_wat("trap.wat");
    let plugin = http_plugin("").with_failure_policy(FailurePolicy::FailReload);
    let mut deployment = host.start(vec![plugin], 1).unwrap();
    let run = |deployment: &mut egress_sim::Deployment| {
        let outcome = deployment
            .worker(0)
            .http(&HttpRequest::get("a", "/"))
            .unwrap();
        assert!(matches!(outcome.result, StreamResult::FailedClosed { .. }));
    };
    run(&mut deployment);
    assert_eq!(calls(&host), 1);
    run(&mut deployment); // first reload: at once
    assert_eq!(calls(&host), 2);
    run(&mut deployment); // within the 1 s backoff: no new VM
    assert_eq!(calls(&host), 2);
    host.clock().advance(Duration::from_secs(1));
    run(&mut deployment);
    assert_eq!(calls(&host), 3);
}

#[test]
fn proc_exit_fails_the_vm() {
    let mut deployment = host_from_wat("proc_exit.wat")
        .start(vec![http_plugin("")], 1)
        .unwrap();
    let outcome = deployment
        .worker(0)
        .http(&HttpRequest::get("a", "/"))
        .unwrap();
    let StreamResult::FailedClosed { error } = outcome.result else {
        panic!("expected a failure");
    };
    assert!(error.contains("proc_exit(3)"), "{error}");
}

#[test]
fn modules_envoy_refuses_to_load() {
    let load = |name: &str| {
        Host::new(&wat_file(name), VmConfig::default(), HostOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{name} must not load"))
    };
    let error = load("unknown_import.wat");
    assert!(matches!(error, HostError::MissingImport { .. }));
    assert_eq!(
        error.to_string(),
        "Failed to load Wasm module due to a missing import: env.proxy_frobnicate"
    );
    assert!(matches!(load("no_abi_version.wat"), HostError::AbiVersion));
    let error = Host::new(
        &wat_file("no_allocator.wat"),
        VmConfig::default(),
        HostOptions::default(),
    )
    .unwrap()
    .start(vec![http_plugin("")], 1)
    .err()
    .unwrap();
    assert!(matches!(error, HostError::MissingAllocator), "{error}");
    let error = Host::new(
        b"\0asm garbage",
        VmConfig::default(),
        HostOptions::default(),
    )
    .err()
    .unwrap();
    assert!(matches!(error, HostError::Compile(_)), "{error}");
}

#[test]
fn a_missing_file_says_how_to_build_it() {
    let path = std::path::Path::new("/nonexistent/target/wasm32-wasip1/release/egress_filter.wasm");
    let error = Host::from_file(path, VmConfig::default(), HostOptions::default())
        .err()
        .unwrap();
    assert_eq!(
        error.to_string(),
        "/nonexistent/target/wasm32-wasip1/release/egress_filter.wasm not found: build it with \
         `cargo build --release --target wasm32-wasip1 -p egress-filter`"
    );
}

fn ticks(host: &Host) -> Option<u8> {
    host.shared().data.get("", b"ticks").ok().map(|(v, _)| v[0])
}

#[test]
fn ticks_follow_the_host_clock_on_every_worker() {
    let host = host_from_wat("ticker.wat");
    let mut deployment = host.start(vec![http_plugin("")], 2).unwrap();
    let poll = |deployment: &mut egress_sim::Deployment| {
        for worker in deployment.workers() {
            worker.poll();
        }
    };
    host.clock().advance(Duration::from_millis(999));
    poll(&mut deployment);
    assert_eq!(ticks(&host), None);
    host.clock().advance(Duration::from_millis(1));
    poll(&mut deployment);
    assert_eq!(ticks(&host), Some(2));
    poll(&mut deployment);
    assert_eq!(ticks(&host), Some(2), "no tick without time passing");
    host.clock().advance(Duration::from_secs(5));
    poll(&mut deployment);
    assert_eq!(
        ticks(&host),
        Some(4),
        "a jump of several periods ticks once"
    );
}

#[test]
fn queue_items_reach_the_root_that_registered_the_queue_last() {
    let host = host_from_wat("queue.wat");
    let mut first = host.worker(0, &[http_plugin("")]).unwrap();
    let mut second = host.worker(1, &[http_plugin("")]).unwrap();
    first.http(&HttpRequest::get("a", "/")).unwrap();
    first.poll();
    let logs: Vec<String> = first
        .take_root_logs()
        .into_iter()
        .map(|l| l.message)
        .collect();
    assert_eq!(logs, ["job"]);

    // The second worker registers the same name again: proxy-wasm-cpp-host keeps the token
    // and moves the queue to the new registrant (`SharedQueue::registerQueue`), whose root now
    // gets the items.
    second.http(&HttpRequest::get("a", "/")).unwrap();
    first.poll();
    assert!(first.take_root_logs().is_empty());
    second.poll();
    let logs: Vec<String> = second
        .take_root_logs()
        .into_iter()
        .map(|l| l.message)
        .collect();
    assert_eq!(logs, ["job"]);
}

#[test]
fn http_callouts_pause_the_request_until_answered() {
    let options = HostOptions {
        clusters: vec!["auth".into()],
        ..HostOptions::default()
    };
    let host = Host::new(&wat_file("callout.wat"), VmConfig::default(), options).unwrap();
    let mut deployment = host.start(vec![http_plugin("")], 1).unwrap();
    let worker = deployment.worker(0);

    let answer = |status: Option<&str>| {
        status.map(|s| CalloutResponse {
            headers: vec![(":status".into(), s.into())],
            ..CalloutResponse::default()
        })
    };
    for (status, expected) in [
        (Some("200"), None),
        (Some("503"), Some(403)),
        (None, Some(403)),
    ] {
        let handle = worker.begin_http(&HttpRequest::get("a", "/")).unwrap();
        assert!(worker.is_paused(handle));
        let callouts = worker.http_callouts();
        assert_eq!(callouts.len(), 1);
        assert_eq!(callouts[0].upstream, "auth");
        assert!(callouts[0]
            .headers
            .contains(&(":path".into(), "/check".into())));
        worker
            .respond_http_callout(callouts[0].token, answer(status))
            .unwrap();
        assert!(!worker.is_paused(handle));
        let outcome = worker.finish(handle);
        assert_eq!(outcome.status(), expected, "callout answered {status:?}");
        if expected.is_none() {
            assert_eq!(outcome.result, StreamResult::Continued);
        }
    }
    assert!(worker.http_callouts().is_empty());
}

#[test]
fn grpc_callouts_deliver_messages_and_close() {
    let options = HostOptions {
        clusters: vec!["svc".into()],
        ..HostOptions::default()
    };
    let host = Host::new(&wat_file("grpc.wat"), VmConfig::default(), options).unwrap();
    let mut deployment = host.start(vec![http_plugin("")], 1).unwrap();
    let worker = deployment.worker(0);
    worker.take_root_logs();
    // Envoy's unary callbacks: the message on success (no close), only the close on failure
    // (a message that came with a failure is dropped).
    for (status, expected) in [(0, vec!["pong"]), (14, vec!["upstream unavailable"])] {
        worker.http(&HttpRequest::get("a", "/")).unwrap();
        let calls = worker.grpc_callouts();
        assert_eq!(calls.len(), 1);
        let call = &calls[0];
        assert_eq!(
            (
                call.upstream.as_str(),
                call.service.as_str(),
                call.method.as_str()
            ),
            ("svc", "pkg.Svc", "Ping")
        );
        assert_eq!(call.messages, [b"ping".to_vec()]);
        assert!(!call.streaming);
        assert_eq!(call.token % 2, 1, "gRPC call tokens are odd");
        let response = egress_sim::GrpcResponse {
            messages: vec![b"pong".to_vec()],
            status,
            status_message: "upstream unavailable".into(),
            ..Default::default()
        };
        worker.respond_grpc_callout(call.token, response).unwrap();
        let logs: Vec<String> = worker
            .take_root_logs()
            .into_iter()
            .map(|l| l.message)
            .collect();
        assert_eq!(logs, expected);
    }
    assert!(worker.grpc_callouts().is_empty());
    assert!(matches!(
        worker.respond_grpc_callout(12345, Default::default()),
        Err(HostError::UnknownCallout(12345))
    ));
}

#[test]
fn shutdown_waits_for_proxy_done_and_foreign_functions_work() {
    let mut options = HostOptions::default();
    let echo: egress_sim::config::ForeignFunction = std::sync::Arc::new(|args: &[u8]| {
        let mut out = b"echo:".to_vec();
        out.extend_from_slice(args);
        Ok(out)
    });
    options.foreign_functions.insert("echo".into(), echo);
    let host = Host::new(&wat_file("drain.wat"), VmConfig::default(), options).unwrap();
    let mut worker = host.worker(0, &[http_plugin("")]).unwrap();
    let messages = |worker: &mut egress_sim::Worker| -> Vec<String> {
        worker
            .take_root_logs()
            .into_iter()
            .map(|l| l.message)
            .collect()
    };
    assert_eq!(messages(&mut worker), ["echo:hi"]);

    worker
        .call_foreign_callback("test.http", 7, b"args")
        .unwrap();
    assert_eq!(messages(&mut worker), ["args"]);

    worker.shutdown();
    assert_eq!(messages(&mut worker), ["done"]);
    assert_eq!(worker.pending_done().len(), 1);
    assert_eq!(worker.live_contexts(), 2);
    assert!(matches!(
        worker.http(&HttpRequest::get("a", "/")),
        Err(HostError::NoPluginOfKind(_))
    ));

    host.clock().advance(Duration::from_secs(1));
    worker.poll();
    assert_eq!(messages(&mut worker), ["tick", "released", "delete"]);
    assert!(worker.pending_done().is_empty());
    assert_eq!(worker.live_contexts(), 1);
}

#[test]
fn abi_floor_module_reads_logs_counts_and_continues() {
    // The benchmark's second floor: it must really make its host calls, or it measures nothing.
    let mut deployment = host_from_wat("abi_floor.wat")
        .start(vec![http_plugin("{}")], 1)
        .unwrap();
    let worker = deployment.worker(0);
    for _ in 0..3 {
        let outcome = worker
            .http(&HttpRequest {
                connection: egress_sim::Connection {
                    principal: Some("cluster.local/ns/ci/sa/runner".into()),
                    ..Default::default()
                },
                ..HttpRequest::get("host-999.example.com", "/v1/items")
            })
            .unwrap();
        assert_eq!(outcome.result, StreamResult::Continued);
        assert_eq!(outcome.logs.len(), 1);
        assert!(outcome.logs[0]
            .message
            .starts_with(r#"{"event":"decision","kind":"http""#));
        assert_eq!(outcome.logs[0].message.len(), 639);
    }
    for name in [
        "egress_floor.decision",
        "egress_floor.reason",
        "egress_floor.policy",
    ] {
        assert_eq!(metric(&deployment, name), Some(3), "{name}");
    }
}

/// The value of the metric `name`, if it is defined.
fn metric(deployment: &egress_sim::Deployment, name: &str) -> Option<u64> {
    let metrics = deployment.host().shared().metrics.snapshot();
    metrics.iter().find(|m| m.name == name).map(|m| m.value)
}

#[test]
fn abi_floor_module_denies_a_tcp_connection_as_egress_filter_does() {
    // The TCP floor: egress_filter's host calls for a connection it denies at connect, the
    // decision line among them, then the close.
    let mut deployment = host_from_wat("abi_floor.wat")
        .start(vec![tcp_plugin("{}")], 1)
        .unwrap();
    let worker = deployment.worker(0);
    let connection = TcpStream {
        connection: egress_sim::Connection {
            sni: Some("host-0.example.com".into()),
            ..Default::default()
        },
        downstream: vec![b"never forwarded".to_vec()],
        ..TcpStream::default()
    };
    for _ in 0..3 {
        let outcome = worker.tcp(&connection).unwrap();
        assert_eq!(outcome.result, StreamResult::Closed);
        assert!(outcome.forwarded_bytes.is_empty());
        assert_eq!(outcome.logs.len(), 1);
        let line: serde_json::Value =
            serde_json::from_str(&outcome.logs[0].message).expect("a JSON decision line");
        assert_eq!(line["kind"], "tcp");
        assert_eq!(line["decision"], "deny");
        assert_eq!(line["attributes"]["connection.sni"], "host-0.example.com");
    }
    assert_eq!(metric(&deployment, "egress_floor.decision"), Some(3));
}

//! Tests of the Rhai runtime: what a script author and an operator see (results, errors with
//! positions, log lines, limits, timeout, cancellation, sandbox, host modules, the cache).

use std::sync::mpsc;
use std::sync::Mutex;

use serde_json::json;

use super::*;

fn job(source: &str) -> ScriptJob {
    ScriptJob {
        script_key: "test.script".into(),
        source: Arc::from(source),
        params: serde_json::Map::new(),
        ctx: json!({}),
        timeout: Some(Duration::from_secs(30)),
        cancel: CancelToken::new(),
        kv: Arc::new(MemoryKv::new()),
        on_log: None,
    }
}

fn run(source: &str) -> ScriptReport {
    RhaiRuntime::default().run(job(source))
}

fn succeeded(report: &ScriptReport) -> &Value {
    match &report.outcome {
        Outcome::Succeeded(value) => value,
        other => panic!("expected success, got {other:?}"),
    }
}

fn failed(report: &ScriptReport) -> (&str, Option<usize>, Option<usize>) {
    match &report.outcome {
        Outcome::Failed {
            message,
            line,
            column,
        } => (message.as_str(), *line, *column),
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// Runs `f` on a thread with the stack a worker thread is documented to need.
fn on_worker_stack<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::Builder::new()
        .stack_size(SCRIPT_THREAD_STACK_SIZE)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("join")
}

/// Starts `job` on another thread and returns once the script has printed "started".
fn start(runtime: Arc<RhaiRuntime>, mut job: ScriptJob) -> std::thread::JoinHandle<ScriptReport> {
    let (started_tx, started_rx) = mpsc::channel();
    let started_tx = Mutex::new(started_tx);
    job.on_log = Some(Arc::new(move |line: &LogLine| {
        if line.message == "started" {
            let _ = started_tx.lock().expect("lock").send(());
        }
    }));
    let handle = std::thread::spawn(move || runtime.run(job));
    started_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the script did not start");
    handle
}

#[test]
fn last_value_is_the_result() {
    let mut j = job("params.x + 1");
    j.params.insert("x".into(), json!(41));
    let report = RhaiRuntime::default().run(j);
    assert_eq!(succeeded(&report), &json!(42));

    let report = run(r#"#{ name: "web", replicas: [1, 2.5], ok: true, none: () }"#);
    assert_eq!(
        succeeded(&report),
        &json!({"name": "web", "none": null, "ok": true, "replicas": [1, 2.5]})
    );
    assert_eq!(succeeded(&run("let x = 1;")), &Value::Null);
}

#[test]
fn params_and_ctx_are_visible() {
    let mut j = job(
        r#"`${ctx.execution_id}:${params.name}:${params.tags[1]}:${ctx.trigger.payload.code}`"#,
    );
    j.params.insert("name".into(), json!("web"));
    j.params.insert("tags".into(), json!(["a", "b"]));
    j.ctx = json!({"execution_id": "01J", "trigger": {"payload": {"code": 137}}});
    let report = RhaiRuntime::default().run(j);
    assert_eq!(succeeded(&report), &json!("01J:web:b:137"));
    // An optional parameter that was not given reads as ().
    assert_eq!(succeeded(&run("params.missing == ()")), &json!(true));
}

#[test]
fn throw_fails_with_the_message_and_position() {
    let report = run("let a = 1;\n  throw \"disk full\";\n");
    assert_eq!(failed(&report), ("disk full", Some(2), Some(3)));

    let report = run("fn check(n) {\n    if n > 1 { throw `too many: ${n}`; }\n}\ncheck(5);\n");
    let (message, line, _) = failed(&report);
    assert_eq!(message, "too many: 5 (in function 'check')");
    assert_eq!(line, Some(2));

    let report = run("throw #{ code: 42 };");
    assert_eq!(failed(&report).0, r#"{"code":42}"#);
}

#[test]
fn runtime_errors_have_positions() {
    let report = run("let a = 1;\nlet b = a + nope;\n");
    let (message, line, column) = failed(&report);
    assert_eq!(message, "Variable not found: nope");
    assert_eq!((line, column), (Some(2), Some(13)));
}

#[test]
fn syntax_errors_are_reported_with_positions() {
    let runtime = RhaiRuntime::default();
    let error = runtime
        .check_syntax("let a = 1;\nlet b = ;\n")
        .expect_err("bad syntax");
    assert_eq!(error.line, Some(2));
    assert!(error.column.is_some());
    assert!(!error.message.is_empty());
    assert!(error.to_string().starts_with("line 2, column "), "{error}");
    assert!(runtime.check_syntax("let a = 1; a + 1").is_ok());

    let report = runtime.run(job("let b = ;"));
    let (message, line, _) = failed(&report);
    assert!(message.starts_with("syntax error: "), "{message}");
    assert_eq!(line, Some(1));
}

#[test]
fn print_debug_and_log_become_log_lines_as_they_happen() {
    let live = Arc::new(Mutex::new(Vec::new()));
    let mut j = job(
        "print(\"hello\");\ndebug(\"details\");\nlog::info(\"i\");\nlog::warn(\"w\");\nlog::error(\"e\");\nlog::info(#{a: 1});\n42",
    );
    let sink = Arc::clone(&live);
    j.on_log = Some(Arc::new(move |line: &LogLine| {
        sink.lock()
            .expect("lock")
            .push((line.level, line.message.clone()));
    }));
    let report = RhaiRuntime::default().run(j);
    assert_eq!(succeeded(&report), &json!(42));
    let lines: Vec<(LogLevel, String)> = report
        .log
        .iter()
        .map(|l| (l.level, l.message.clone()))
        .collect();
    assert_eq!(
        lines,
        vec![
            (LogLevel::Print, "hello".to_string()),
            (LogLevel::Debug, "\"details\"".to_string()),
            (LogLevel::Info, "i".to_string()),
            (LogLevel::Warn, "w".to_string()),
            (LogLevel::Error, "e".to_string()),
            (LogLevel::Info, "{\"a\":1}".to_string()),
        ]
    );
    assert_eq!(*live.lock().expect("lock"), lines);
    let first = serde_json::to_value(&report.log[0]).expect("serialize");
    assert_eq!(first["level"], "print");
    assert_eq!(first["message"], "hello");
    assert!(first["timestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
}

#[test]
fn log_lines_are_kept_even_when_the_script_fails() {
    let report = run("print(\"before\");\nthrow \"after\";");
    assert_eq!(report.log.len(), 1);
    assert_eq!(report.log[0].message, "before");
}

#[test]
fn a_flood_of_log_lines_is_capped() {
    let report = run(&format!(
        "for i in 0..{} {{ print(i); }}",
        MAX_LOG_LINES + 5
    ));
    assert_eq!(report.log.len(), MAX_LOG_LINES + 1);
    let last = &report.log[MAX_LOG_LINES];
    assert_eq!(last.level, LogLevel::Warn);
    assert!(
        last.message.starts_with("5 further log lines were dropped"),
        "{}",
        last.message
    );
}

#[test]
fn runaway_loop_times_out() {
    let mut j = job("loop {}");
    j.timeout = Some(Duration::from_secs(1));
    let report = RhaiRuntime::default().run(j);
    assert_eq!(
        report.outcome,
        Outcome::Timeout {
            after: Duration::from_secs(1)
        }
    );
    assert!(
        report.elapsed >= Duration::from_secs(1),
        "{:?}",
        report.elapsed
    );
    assert!(
        report.elapsed < Duration::from_secs(5),
        "{:?}",
        report.elapsed
    );
}

#[test]
fn default_timeout_comes_from_the_limits() {
    let runtime = RhaiRuntime::new(Limits {
        default_timeout: Duration::from_millis(300),
        ..Limits::default()
    });
    let mut j = job("loop {}");
    j.timeout = None;
    let report = runtime.run(j);
    assert_eq!(
        report.outcome,
        Outcome::Timeout {
            after: Duration::from_millis(300)
        }
    );
}

#[test]
fn scripts_cannot_catch_a_timeout() {
    let mut j = job("loop { try { time::sleep(10); } catch { } }");
    j.timeout = Some(Duration::from_millis(500));
    let report = RhaiRuntime::default().run(j);
    assert!(
        matches!(report.outcome, Outcome::Timeout { .. }),
        "{:?}",
        report.outcome
    );
}

#[test]
fn sleeping_past_the_timeout_times_out() {
    let mut j = job("time::sleep(60); 1");
    j.timeout = Some(Duration::from_millis(300));
    let report = RhaiRuntime::default().run(j);
    assert!(
        matches!(report.outcome, Outcome::Timeout { .. }),
        "{:?}",
        report.outcome
    );
    assert!(report.elapsed >= Duration::from_millis(300));
    assert!(report.elapsed < Duration::from_secs(5));
}

#[test]
fn cancel_ends_a_runaway_loop() {
    let runtime = Arc::new(RhaiRuntime::default());
    let j = job("print(\"started\"); loop {}");
    let cancel = j.cancel.clone();
    let handle = start(runtime, j);
    let canceled_at = Instant::now();
    cancel.cancel();
    let report = handle.join().expect("join");
    assert_eq!(report.outcome, Outcome::Canceled);
    assert!(
        canceled_at.elapsed() < Duration::from_secs(2),
        "{:?}",
        canceled_at.elapsed()
    );
}

#[test]
fn cancel_ends_a_sleep() {
    let runtime = Arc::new(RhaiRuntime::default());
    let j = job("print(\"started\"); time::sleep(60); 1");
    let cancel = j.cancel.clone();
    let handle = start(runtime, j);
    let canceled_at = Instant::now();
    cancel.cancel();
    let report = handle.join().expect("join");
    assert_eq!(report.outcome, Outcome::Canceled);
    assert!(
        canceled_at.elapsed() < Duration::from_secs(2),
        "{:?}",
        canceled_at.elapsed()
    );
}

#[test]
fn a_job_canceled_before_it_starts_does_not_run() {
    let j = job("print(\"ran\"); 1");
    j.cancel.cancel();
    let report = RhaiRuntime::default().run(j);
    assert_eq!(report.outcome, Outcome::Canceled);
    assert!(report.log.is_empty());
}

#[test]
fn string_growth_hits_the_size_limit() {
    let report = run("let s = \"x\"; loop { s += s; }");
    let (message, line, _) = failed(&report);
    assert!(message.starts_with("string too large"), "{message}");
    assert!(message.contains(&Limits::default().max_string_size.to_string()));
    assert_eq!(line, Some(1));
}

#[test]
fn array_and_map_growth_hit_their_limits() {
    let runtime = RhaiRuntime::new(Limits {
        max_array_size: 100,
        max_map_size: 100,
        ..Limits::default()
    });
    let report = runtime.run(job("let a = []; loop { a.push(1); }"));
    assert!(
        failed(&report).0.starts_with("array too large"),
        "{:?}",
        report.outcome
    );
    // rhai itself does not check assignments by index; the runtime's size check does.
    for source in [
        "let m = #{}; let i = 0; loop { m[`k${i}`] = i; i += 1; }",
        "let m = #{a: #{}}; let i = 0; loop { m.a[`k${i}`] = i; i += 1; }",
    ] {
        let report = runtime.run(job(source));
        assert_eq!(
            failed(&report).0,
            "map too large: the limit is 100 entries",
            "{source}"
        );
    }
}

#[test]
fn operations_are_limited() {
    let runtime = RhaiRuntime::new(Limits {
        max_operations: 10_000,
        ..Limits::default()
    });
    let report = runtime.run(job("let i = 0; loop { i += 1; }"));
    assert!(
        failed(&report).0.starts_with("too many operations"),
        "{:?}",
        report.outcome
    );
}

#[test]
fn deep_recursion_fails_clearly() {
    let report = on_worker_stack(|| {
        run(&format!(
            "fn down(n) {{ {}down(n + 1){} }}\ndown(0)",
            "1 + (".repeat(28),
            ")".repeat(28)
        ))
    });
    let (message, _, _) = failed(&report);
    assert!(
        message.starts_with("stack overflow: too many nested function calls"),
        "{message}"
    );
    assert!(message.contains("64"), "{message}");
}

#[test]
fn the_documented_stack_holds_the_deepest_script_the_limits_allow() {
    // Every call level nests expressions almost as deep as the limit lets it.
    let nested = format!(
        "fn down(n) {{ {}down(n + 1){} }}\ndown(0)",
        "1 + (".repeat(28),
        ")".repeat(28)
    );
    let report = on_worker_stack(move || run(&nested));
    assert!(
        failed(&report).0.starts_with("stack overflow"),
        "{:?}",
        report.outcome
    );
}

#[test]
fn deeply_nested_expressions_are_refused_at_compile_time() {
    let source = format!("{}1{}", "(".repeat(200), ")".repeat(200));
    let runtime = RhaiRuntime::default();
    let error = on_worker_stack(move || runtime.check_syntax(&source)).expect_err("too deep");
    assert!(
        error.message.contains("exceeds maximum complexity"),
        "{error}"
    );
}

#[test]
fn imports_are_refused() {
    let report = run("import \"/etc/passwd\" as p;\n1");
    let (message, line, _) = failed(&report);
    assert!(message.contains("cannot import"), "{message}");
    assert_eq!(line, Some(1));
}

#[test]
fn eval_is_disabled() {
    let report = run("eval(\"40 + 2\")");
    let (message, _, _) = failed(&report);
    assert!(message.contains("eval"), "{message}");
}

#[test]
fn there_is_no_way_to_reach_files_or_processes() {
    for attempt in [
        "open(\"/etc/passwd\")",
        "read_file(\"/etc/passwd\")",
        "fs::read(\"/etc/passwd\")",
        "File(\"/etc/passwd\")",
        "exec(\"ls\")",
        "system(\"ls\")",
        "process::run(\"ls\")",
    ] {
        let report = run(attempt);
        let (message, _, _) = failed(&report);
        assert!(
            message.contains("not found") || message.contains("Unknown"),
            "{attempt}: {message}"
        );
    }
}

#[test]
fn kv_reads_writes_and_deletes() {
    let kv = Arc::new(MemoryKv::new());
    kv.set("existing", "v0", None).expect("set");
    let mut j = job(r#"
        let before = kv::get("existing");
        kv::set("a", "1");
        kv::set("n", 5);
        let a = kv::get("a");
        let deleted = kv::delete("a");
        let again = kv::delete("a");
        [before, a, deleted, again, kv::get("a"), kv::get("n")]
        "#);
    j.kv = kv.clone();
    let report = RhaiRuntime::default().run(j);
    assert_eq!(
        succeeded(&report),
        &json!(["v0", "1", true, false, null, "5"])
    );
    assert_eq!(kv.get("n"), Ok(Some("5".into())));
}

#[test]
fn kv_ttl_expires() {
    let kv = Arc::new(MemoryKv::new());
    let runtime = RhaiRuntime::default();
    let mut j = job("kv::set(\"lock\", \"held\", 1); kv::get(\"lock\")");
    j.kv = kv.clone();
    assert_eq!(succeeded(&runtime.run(j)), &json!("held"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut j = job("kv::get(\"lock\")");
        j.kv = kv.clone();
        if succeeded(&runtime.run(j)).is_null() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a 1 s ttl did not expire within 5 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = runtime.run(job("kv::set(\"x\", \"y\", -1)"));
    assert!(failed(&report).0.contains("ttl must not be negative"));
}

struct BrokenKv;

impl KvStore for BrokenKv {
    fn get(&self, _: &str) -> Result<Option<String>, String> {
        Err("store unavailable".into())
    }
    fn set(&self, _: &str, _: &str, _: Option<u64>) -> Result<(), String> {
        Err("store unavailable".into())
    }
    fn delete(&self, _: &str) -> Result<bool, String> {
        Err("store unavailable".into())
    }
    fn claim(&self, _: &str, _: &str, _: Option<u64>) -> Result<bool, String> {
        Err("store unavailable".into())
    }
}

#[test]
fn kv_store_errors_become_script_errors() {
    let mut j = job("let x = 1;\nkv::get(\"k\")");
    j.kv = Arc::new(BrokenKv);
    let report = RhaiRuntime::default().run(j);
    assert_eq!(
        failed(&report),
        ("kv::get('k'): store unavailable", Some(2), Some(5))
    );
    let mut j = job("let r = \"no\"; try { kv::set(\"k\", \"v\"); } catch (e) { r = e } r");
    j.kv = Arc::new(BrokenKv);
    let report = RhaiRuntime::default().run(j);
    assert_eq!(
        succeeded(&report),
        &json!("kv::set('k'): store unavailable")
    );
}

#[test]
fn json_module() {
    let report = run(r#"
        let v = json::parse(`{"a": [1, 2, {"b": null}], "c": "d"}`);
        let back = json::stringify(v);
        let caught = ();
        try { json::parse("{nope") } catch (e) { caught = e }
        #{ a1: v.a[1], back: back, caught: caught, pretty: json::stringify([1], true) }
        "#);
    let value = succeeded(&report);
    assert_eq!(value["a1"], json!(2));
    assert_eq!(value["back"], json!(r#"{"a":[1,2,{"b":null}],"c":"d"}"#));
    assert!(value["caught"]
        .as_str()
        .is_some_and(|e| e.starts_with("json::parse: key must be a string at line 1 column 2")));
    assert_eq!(value["pretty"], json!("[\n  1\n]"));
}

#[test]
fn time_module() {
    let before = chrono::Utc::now().timestamp_millis();
    let report = run("#{ now: time::now(), unix: time::unix(), ms: time::unix_ms() }");
    let after = chrono::Utc::now().timestamp_millis();
    let value = succeeded(&report);
    let now = value["now"].as_str().expect("now is a string");
    assert!(now.ends_with('Z'), "{now}");
    let parsed = chrono::DateTime::parse_from_rfc3339(now).expect("ISO-8601");
    assert!((before - 1000..=after + 1000).contains(&parsed.timestamp_millis()));
    let ms = value["ms"].as_i64().expect("ms");
    assert!(
        (before..=after).contains(&ms),
        "{before} <= {ms} <= {after}"
    );
    let unix = value["unix"].as_i64().expect("unix");
    assert!((before / 1000..=after / 1000).contains(&unix));

    let report =
        run("let t = time::unix_ms(); time::sleep(0.05); time::sleep(0); time::unix_ms() - t");
    assert!(succeeded(&report).as_i64().is_some_and(|d| d >= 50));
    let report = run("time::sleep(-1)");
    assert!(failed(&report).0.contains("non-negative"));
}

#[test]
fn compiled_scripts_are_cached_until_edited() {
    let runtime = RhaiRuntime::default();
    let mut first = job("params.x + 1");
    first.params.insert("x".into(), json!(1));
    let source = Arc::clone(&first.source);
    assert_eq!(succeeded(&runtime.run(first)), &json!(2));
    let mut second = job("params.x + 1");
    second.params.insert("x".into(), json!(2));
    assert_eq!(succeeded(&runtime.run(second)), &json!(3));
    let mut third = job("");
    third.source = source;
    third.params.insert("x".into(), json!(3));
    assert_eq!(succeeded(&runtime.run(third)), &json!(4));
    assert_eq!(runtime.compilations(), 1);
    assert_eq!(runtime.cached_scripts(), 1);

    let mut edited = job("params.x * 10");
    edited.params.insert("x".into(), json!(2));
    assert_eq!(succeeded(&runtime.run(edited)), &json!(20));
    assert_eq!(runtime.compilations(), 2);
    assert_eq!(runtime.cached_scripts(), 1);

    let mut other = job("1");
    other.script_key = "test.other".into();
    runtime.run(other);
    assert_eq!(runtime.cached_scripts(), 2);
    runtime.forget_script("test.other");
    assert_eq!(runtime.cached_scripts(), 1);
}

#[test]
fn one_runtime_serves_many_threads() {
    let runtime = Arc::new(RhaiRuntime::default());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let runtime = Arc::clone(&runtime);
            std::thread::spawn(move || {
                (0..25)
                    .map(|i| {
                        let mut j = job("print(params.i); params.i * 2");
                        j.params.insert("i".into(), json!(t * 100 + i));
                        let report = runtime.run(j);
                        assert_eq!(report.log.len(), 1);
                        assert_eq!(report.log[0].message, (t * 100 + i).to_string());
                        succeeded(&report).as_i64().unwrap_or(-1)
                    })
                    .sum::<i64>()
            })
        })
        .collect();
    let total: i64 = handles.into_iter().map(|h| h.join().expect("join")).sum();
    let expected: i64 = (0..4)
        .flat_map(|t| (0..25).map(move |i| (t * 100 + i) * 2))
        .sum();
    assert_eq!(total, expected);
    assert_eq!(runtime.cached_scripts(), 1);
    assert!(runtime.compilations() <= 4);
}

#[test]
fn a_panicking_log_sink_fails_the_run_not_the_thread() {
    let runtime = RhaiRuntime::default();
    let mut j = job("print(\"boom\"); 1");
    j.on_log = Some(Arc::new(|_: &LogLine| panic!("sink exploded")));
    let report = runtime.run(j);
    let (message, _, _) = failed(&report);
    assert!(
        message.contains("internal error") && message.contains("sink exploded"),
        "{message}"
    );
    assert_eq!(succeeded(&runtime.run(job("1 + 1"))), &json!(2));
}

#[test]
fn runtimes_with_different_limits_share_a_thread() {
    let tight = RhaiRuntime::new(Limits {
        max_operations: 1_000,
        ..Limits::default()
    });
    let loose = RhaiRuntime::default();
    let source = "let i = 0; while i < 5000 { i += 1; } i";
    assert!(failed(&tight.run(job(source)))
        .0
        .starts_with("too many operations"));
    assert_eq!(succeeded(&loose.run(job(source))), &json!(5000));
    assert!(failed(&tight.run(job(source)))
        .0
        .starts_with("too many operations"));
}

#[test]
fn the_runtime_is_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<RhaiRuntime>();
    send_sync::<ScriptJob>();
    send_sync::<ScriptReport>();
}

#[test]
fn a_log_sink_may_run_a_script_itself() {
    let runtime = Arc::new(RhaiRuntime::default());
    let inner_results = Arc::new(Mutex::new(Vec::new()));
    let mut outer = job("print(\"one\"); kv::set(\"k\", \"v\"); print(\"two\"); kv::get(\"k\")");
    let (nested_runtime, results) = (Arc::clone(&runtime), Arc::clone(&inner_results));
    outer.on_log = Some(Arc::new(move |line: &LogLine| {
        let mut inner = job("print(\"inner\"); 7");
        inner.script_key = "test.inner".into();
        let report = nested_runtime.run(inner);
        results.lock().expect("lock").push((
            line.message.clone(),
            report.outcome,
            report.log.len(),
        ));
    }));
    let report = runtime.run(outer);
    assert_eq!(succeeded(&report), &json!("v"));
    let messages: Vec<&str> = report.log.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(messages, ["one", "two"]);
    let inner = inner_results.lock().expect("lock");
    assert_eq!(inner.len(), 2);
    for (_, outcome, log_len) in inner.iter() {
        assert_eq!(outcome, &Outcome::Succeeded(json!(7)));
        assert_eq!(*log_len, 1);
    }
}

#[test]
fn a_result_nested_too_deep_to_keep_fails_the_run() {
    let report = run("let a = 1; for i in 0..100 { a = [a]; } a");
    let (message, _, _) = failed(&report);
    assert!(message.contains("nests 100 levels deep"), "{message}");
    let report = run("let a = 1; for i in 0..10 { a = [a]; } a");
    assert!(
        matches!(report.outcome, Outcome::Succeeded(_)),
        "{:?}",
        report.outcome
    );
}

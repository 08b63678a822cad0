use super::*;

fn line_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
        .and_then(|l| l[prefix.len()..].trim().parse().ok())
}

#[test]
fn counters_and_histograms_render_in_text_format() {
    let m = Metrics::new();
    m.observe_request("DescribeImages", "Success", Duration::from_millis(3));
    m.observe_request("DescribeImages", "Success", Duration::from_millis(30));
    m.observe_request(
        "ImportImage",
        "InvalidParameterValue",
        Duration::from_secs(20),
    );
    m.import_finished(
        ImageState::ImportFailed,
        Some(FailureCode::InvalidUrl),
        Duration::from_secs(2),
    );
    m.add_bytes_fetched(10);
    m.add_bytes_fetched(5);
    m.shared_limit_unavailable();
    let text = m.render(&ScrapeFacts {
        job_counts: Some(vec![(TaskState::Succeeded, 4), (TaskState::Queued, 2)]),
        rss_bytes: Some(4096),
    });
    let v = |p: &str| line_value(&text, p);
    assert_eq!(
        v(r#"imagegate_requests_total{action="DescribeImages",code="Success"}"#),
        Some(2.0)
    );
    assert_eq!(
        v(r#"imagegate_requests_total{action="ImportImage",code="InvalidParameterValue"}"#),
        Some(1.0)
    );
    let b = "imagegate_request_duration_seconds_bucket";
    assert_eq!(
        v(&format!(r#"{b}{{action="DescribeImages",le="0.001"}}"#)),
        Some(0.0)
    );
    assert_eq!(
        v(&format!(r#"{b}{{action="DescribeImages",le="0.005"}}"#)),
        Some(1.0)
    );
    assert_eq!(
        v(&format!(r#"{b}{{action="DescribeImages",le="0.05"}}"#)),
        Some(2.0)
    );
    assert_eq!(
        v(&format!(r#"{b}{{action="ImportImage",le="10"}}"#)),
        Some(0.0)
    );
    assert_eq!(
        v(&format!(r#"{b}{{action="ImportImage",le="+Inf"}}"#)),
        Some(1.0)
    );
    assert_eq!(
        v(r#"imagegate_request_duration_seconds_count{action="DescribeImages"}"#),
        Some(2.0)
    );
    assert_eq!(
        v(r#"imagegate_imports_total{state="IMPORTFAILED",code="InvalidUrl"}"#),
        Some(1.0)
    );
    assert_eq!(v("imagegate_import_bytes_fetched_total"), Some(15.0));
    assert_eq!(
        v("imagegate_rate_limit_shared_unavailable_total"),
        Some(1.0)
    );
    assert_eq!(v("imagegate_import_queue_depth"), Some(2.0));
    assert_eq!(v(r#"imagegate_import_jobs{state="SUCCEEDED"}"#), Some(4.0));
    assert_eq!(v("process_resident_memory_bytes"), Some(4096.0));
    assert_eq!(v("imagegate_catalog_up"), Some(1.0));
    // Every family is announced once, before its samples.
    for fam in [
        "imagegate_requests_total",
        "imagegate_request_duration_seconds",
        "imagegate_imports_total",
    ] {
        let n = text
            .lines()
            .filter(|l| {
                *l == format!("# TYPE {fam} counter") || l.starts_with(&format!("# TYPE {fam} "))
            })
            .count();
        assert_eq!(n, 1, "{fam}");
    }
}

#[test]
fn catalog_down_leaves_out_queue_depth() {
    let text = Metrics::new().render(&ScrapeFacts::default());
    assert!(!text.contains("imagegate_import_queue_depth "));
    assert_eq!(line_value(&text, "imagegate_catalog_up"), Some(0.0));
}

#[test]
fn label_values_are_escaped_and_bounded() {
    let m = Metrics::new();
    m.observe_request("other", "A\"b\\c\nd", Duration::ZERO);
    let text = m.render(&ScrapeFacts::default());
    assert!(text.contains(r#"code="A\"b\\c\nd""#), "{text}");
    for i in 0..(MAX_SERIES + 50) {
        m.observe_request("other", &format!("Code{i}"), Duration::ZERO);
    }
    let series = m.requests.snapshot();
    assert!(series.len() <= MAX_SERIES + 1, "{}", series.len());
    assert!(series
        .iter()
        .any(|(l, n)| l == &vec!["other".to_string(), "other".to_string()] && *n >= 50));
}

#[test]
fn action_labels_are_known_names_only() {
    assert_eq!(action_label(Some("DescribeImages")), "DescribeImages");
    assert_eq!(action_label(Some("DropAllTables")), "other");
    assert_eq!(action_label(None), "");
}

#[test]
fn lease_guard_counts_down_when_dropped() {
    let m: &'static Metrics = Box::leak(Box::new(Metrics::new()));
    let before = m.leases_held();
    let g = m.hold_lease();
    assert_eq!(m.leases_held(), before + 1);
    drop(g);
    assert_eq!(m.leases_held(), before);
}

#[test]
fn rss_is_read_on_linux() {
    if cfg!(target_os = "linux") {
        assert!(process_rss_bytes().is_some_and(|b| b > 0));
    }
}

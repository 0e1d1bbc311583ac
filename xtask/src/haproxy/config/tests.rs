use super::*;

#[test]
fn defaults_render_every_feature() {
    let text = render(&HaproxySettings::default()).unwrap();
    assert!(!text.contains("{{"), "{text}");
    for expected in [
        "stats socket /run/haproxy/admin.sock mode 600 level admin",
        "bind :8443 ssl crt /etc/haproxy/tls/balancer.pem",
        "server-template s 1-32 unset.invalid:1 disabled check init-addr last,127.0.0.1",
        "server-state-file /var/lib/haproxy/server-state",
        "load-server-state-from-file global",
        "default-server inter 1000 fall 2 rise 2",
        "uri /ready ver HTTP/1.1",
        "acl metrics_allowed src 127.0.0.1 10.0.0.0/8",
        "gt 100 }",
        "use-service prometheus-exporter",
        "balance roundrobin",
    ] {
        assert!(text.contains(expected), "missing `{expected}`");
    }
    // 443 is the default port: no port in the redirect.
    assert!(text.contains("regsub(:[0-9]+$,)]%[capture.req.uri] code 301"));
    let without_state = render(&HaproxySettings {
        state_file: None,
        ..HaproxySettings::default()
    })
    .unwrap();
    assert!(
        !without_state.contains("    server-state-file "),
        "{without_state}"
    );
    assert!(!without_state.contains("    load-server-state-from-file "));
}

#[test]
fn the_redirect_names_a_public_port_other_than_443() {
    let settings = HaproxySettings {
        https_public_port: 18443,
        ..Default::default()
    };
    assert!(render(&settings)
        .unwrap()
        .contains("regsub(:[0-9]+$,)]:18443%[capture.req.uri]"));
}

#[test]
fn an_empty_allow_list_denies_metrics_to_everyone() {
    let settings = HaproxySettings {
        metrics_allow: vec![],
        ..Default::default()
    };
    let text = render(&settings).unwrap();
    assert!(text.contains("http-request deny deny_status 403 if { path /metrics }\n"));
    assert!(!text.contains("metrics_allowed"));
}

fn error(settings: HaproxySettings) -> String {
    format!("{:#}", render(&settings).unwrap_err())
}

#[test]
fn values_that_would_inject_syntax_are_rejected_by_name() {
    let e = error(HaproxySettings {
        health_path: "/ready hdr X-Evil 1".into(),
        ..Default::default()
    });
    assert!(
        e.contains("`health_path`") && e.contains("contains ` `"),
        "{e}"
    );
    let e = error(HaproxySettings {
        cert_path: "/x.pem\n    stats socket /tmp/open level admin".into(),
        ..Default::default()
    });
    assert!(e.contains("`cert_path`"), "{e}");
    let e = error(HaproxySettings {
        https_bind: ":8443#".into(),
        ..Default::default()
    });
    assert!(e.contains("`https_bind`"), "{e}");
    let e = error(HaproxySettings {
        socket_path: "/run/${HOME}".into(),
        ..Default::default()
    });
    assert!(e.contains("`socket_path`") && e.contains('$'), "{e}");
    let e = error(HaproxySettings {
        metrics_allow: vec!["10.0.0.0/8 }".into()],
        ..Default::default()
    });
    assert!(e.contains("`metrics_allow`"), "{e}");
    let e = error(HaproxySettings {
        metrics_allow: vec!["10.0.0.0/33".into()],
        ..Default::default()
    });
    assert!(e.contains("prefix"), "{e}");
}

#[test]
fn out_of_range_numbers_are_rejected_by_name() {
    for (settings, field) in [
        (
            HaproxySettings {
                api_rate: 0,
                ..Default::default()
            },
            "`api_rate`",
        ),
        (
            HaproxySettings {
                max_servers: 0,
                ..Default::default()
            },
            "`max_servers`",
        ),
        (
            HaproxySettings {
                check_interval_ms: 5,
                ..Default::default()
            },
            "`check_interval_ms`",
        ),
        (
            HaproxySettings {
                http_bind: "127.0.0.1".into(),
                ..Default::default()
            },
            "`http_bind`",
        ),
    ] {
        let e = error(settings);
        assert!(e.contains(field), "{e}");
    }
}

#[test]
fn unknown_placeholders_are_named() {
    let e = render_template("x {{api_rte}} y", &HaproxySettings::default()).unwrap_err();
    assert!(
        format!("{e}").contains("unknown placeholder `{{api_rte}}`"),
        "{e}"
    );
}

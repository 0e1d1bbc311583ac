use super::*;

#[test]
fn dev_servers_are_the_app_service_found_through_docker_dns() {
    let text = render(&ComposeSettings::dev(DEV_HTTPS_PORT)).unwrap();
    assert!(!text.contains("{{"), "{text}");
    for expected in [
        "resolvers docker\n    nameserver dns 127.0.0.11:53\n",
        "server-template s 1-8 app:8080 check resolvers docker resolve-prefer ipv4 init-addr none",
        "bind :8443 ssl crt /usr/local/etc/haproxy/balancer.pem",
        "stats socket /var/lib/haproxy/admin.sock",
        // The redirect goes to the host's published HTTPS port.
        "regsub(:[0-9]+$,)]:8443%[capture.req.uri] code 301",
        // The rest is the deploy targets' edge, unchanged.
        "http-after-response set-header Strict-Transport-Security",
        "acl metrics_allowed src 127.0.0.1 10.0.0.0/8",
        "uri /ready ver HTTP/1.1",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    // No runtime-API slot pool: nothing steers these slots.
    assert!(!text.contains("127.0.0.1:1 disabled"), "{text}");
}

#[test]
fn prod_reads_the_certificate_from_the_secret_and_redirects_to_443() {
    let text = render(&ComposeSettings::prod()).unwrap();
    assert!(
        text.contains("ssl crt /run/secrets/balancer.pem "),
        "{text}"
    );
    assert!(text.contains("regsub(:[0-9]+$,)]%[capture.req.uri] code 301"));
}

#[test]
fn the_deploy_targets_config_keeps_its_slot_pool_and_no_resolvers() {
    let text = config::render(&HaproxySettings::default()).unwrap();
    assert!(text.contains(
        "    server-template s 1-32 unset.invalid:1 disabled check init-addr last,127.0.0.1\n"
    ));
    assert!(!text.contains("resolvers docker"), "{text}");
}

fn error(change: impl FnOnce(&mut ComposeSettings)) -> String {
    let mut settings = ComposeSettings::dev(DEV_HTTPS_PORT);
    change(&mut settings);
    format!("{:#}", render(&settings).unwrap_err())
}

#[test]
fn bad_values_are_named() {
    let e = error(|s| s.app_host = "app:8080 check\n    server evil 10.0.0.1".into());
    assert!(e.contains("`app_host`"), "{e}");
    let e = error(|s| s.app_host = String::new());
    assert!(e.contains("`app_host`"), "{e}");
    let e = error(|s| s.app_port = 0);
    assert!(e.contains("`app_port`"), "{e}");
    let e = error(|s| s.nameserver = "127.0.0.11".into());
    assert!(
        e.contains("`nameserver`") && e.contains("address:port"),
        "{e}"
    );
    // The shared settings are checked by the shared renderer, by name.
    let e = error(|s| s.haproxy.cert_path = "balancer.pem".into());
    assert!(e.contains("`cert_path`"), "{e}");
}

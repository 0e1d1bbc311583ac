//! What the balancer costs a request: `/health` through the HAProxy
//! container (TLS, keep-alive, the deployed instances behind it) against
//! one instance of the same image reached directly on a published port,
//! both under `wrk` with the same connections, alternately, best of each.
use std::{collections::HashMap, time::Duration};

use anyhow::{bail, Context, Result};
use bollard::{
    models::{ContainerCreateBody, HostConfig, PortBinding},
    query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder},
    Docker,
};
use serde::Serialize;

use crate::setup::{self, Tool};

/// Only the benchmark needs it; a deploy never installs anything.
const WRK: &[Tool] = &[Tool {
    program: "wrk",
    package: "wrk",
}];
const CONNECTIONS: u32 = 4;
const SECONDS: u32 = 3;
const ROUNDS: usize = 2;

/// One wrk run: median latency and requests per second.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Wrk {
    pub p50_ms: f64,
    pub requests_per_second: f64,
    /// Non-2xx/3xx answers and socket errors.
    pub errors: u64,
}

#[derive(Debug, Serialize)]
pub struct EdgeFigures {
    pub balancer: Wrk,
    pub direct: Wrk,
    /// Balancer p50 minus direct p50.
    pub added_p50_ms: f64,
    /// Balancer throughput over direct.
    pub throughput_ratio: f64,
}

/// `230.00us`, `1.20ms`, `2.00s` in milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

/// Reads `wrk --latency` output: the 50% line of the latency distribution,
/// `Requests/sec:`, and any `Non-2xx or 3xx responses:` / `Socket errors:`.
pub fn parse_wrk(text: &str) -> Result<Wrk> {
    let mut p50 = None;
    let mut rps = None;
    let mut errors = 0;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", value] => p50 = duration_ms(value),
            ["Requests/sec:", value] => rps = value.parse::<f64>().ok(),
            ["Non-2xx", "or", "3xx", "responses:", n] => errors += n.parse::<u64>().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>()
            }
            _ => {}
        }
    }
    match (p50, rps) {
        (Some(p50_ms), Some(requests_per_second)) => Ok(Wrk {
            p50_ms,
            requests_per_second,
            errors,
        }),
        _ => bail!("wrk output without a 50% latency or Requests/sec line:\n{text}"),
    }
}

async fn wrk(url: &str) -> Result<Wrk> {
    let args = vec![
        "-t1".to_owned(),
        format!("-c{CONNECTIONS}"),
        format!("-d{SECONDS}s"),
        "--latency".to_owned(),
        url.to_owned(),
    ];
    let output = tokio::task::spawn_blocking(move || {
        duct::cmd("wrk", &args)
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked()
            .run()
    })
    .await?
    .context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("wrk {url} failed: {text}");
    }
    parse_wrk(&text)
}

/// Starts one instance of `image` publishing `port` on 127.0.0.1; its URL
/// and container id.
async fn direct_instance(docker: &Docker, image: &str, port: u16) -> Result<(String, String)> {
    let host_port = super::free_port()?;
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        env: Some(vec![format!("PORT={port}"), "LOG_FORMAT=json".into()]),
        labels: Some(HashMap::from([("xtask.bench".into(), "direct".into())])),
        host_config: Some(HostConfig {
            port_bindings: Some(HashMap::from([(
                format!("{port}/tcp"),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(host_port.to_string()),
                }]),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::default()
        .name(&format!("xtask-bench-direct-{host_port}"))
        .build();
    let id = docker
        .create_container(Some(options), body)
        .await
        .context("creating the direct instance")?
        .id;
    docker
        .start_container(&id, None)
        .await
        .context("starting the direct instance")?;
    Ok((format!("http://127.0.0.1:{host_port}/health"), id))
}

async fn answers(url: &str) -> bool {
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// `public_url`: the deployed balancer's. `image`, `port`: what the
/// deployed instances run, for the direct one.
pub async fn run(docker: &Docker, public_url: &str, image: &str, port: u16) -> Result<EdgeFigures> {
    setup::ensure(WRK)?;
    let (direct_url, id) = direct_instance(docker, image, port).await?;
    let balancer_url = format!("{public_url}/health");
    let measured = async {
        if !answers(&direct_url).await {
            bail!("the direct instance did not answer {direct_url}");
        }
        let (mut balancer, mut direct) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            direct.push(wrk(&direct_url).await?);
            balancer.push(wrk(&balancer_url).await?);
        }
        Ok((best(&balancer), best(&direct)))
    }
    .await;
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    let _ = docker.remove_container(&id, Some(options)).await;
    let (balancer, direct) = measured?;
    Ok(EdgeFigures {
        added_p50_ms: balancer.p50_ms - direct.p50_ms,
        throughput_ratio: balancer.requests_per_second / direct.requests_per_second,
        balancer,
        direct,
    })
}

/// The quietest of the rounds (the machine is shared): lowest p50,
/// highest throughput, every error.
fn best(runs: &[Wrk]) -> Wrk {
    Wrk {
        p50_ms: runs.iter().map(|r| r.p50_ms).fold(f64::INFINITY, f64::min),
        requests_per_second: runs
            .iter()
            .map(|r| r.requests_per_second)
            .fold(0.0, f64::max),
        errors: runs.iter().map(|r| r.errors).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "Running 3s test @ https://127.0.0.1:18443/health
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   412.50us  120.10us   4.20ms   91.00%
    Req/Sec     9.70k   500.00     10.20k    70.00%
  Latency Distribution
     50%  380.00us
     75%  450.00us
     90%  520.00us
     99%    1.10ms
  29100 requests in 3.00s, 4.10MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 3
Requests/sec:   9700.12
Transfer/sec:      1.37MB
";

    #[test]
    fn wrk_output_gives_the_median_the_rate_and_the_errors() {
        let w = parse_wrk(OUTPUT).unwrap();
        assert!((w.p50_ms - 0.38).abs() < 1e-9, "{w:?}");
        assert!((w.requests_per_second - 9700.12).abs() < 1e-9);
        assert_eq!(w.errors, 6);
        assert!(parse_wrk("unable to connect to 127.0.0.1:1 Connection refused").is_err());
    }

    #[test]
    fn durations_come_in_microseconds_milliseconds_or_seconds() {
        assert_eq!(duration_ms("250.00us"), Some(0.25));
        assert_eq!(duration_ms("1.50ms"), Some(1.5));
        assert_eq!(duration_ms("2.00s"), Some(2000.0));
        assert_eq!(duration_ms("fast"), None);
    }

    #[test]
    fn the_best_round_is_the_quietest() {
        let a = Wrk {
            p50_ms: 0.4,
            requests_per_second: 9000.0,
            errors: 0,
        };
        let b = Wrk {
            p50_ms: 0.3,
            requests_per_second: 8000.0,
            errors: 1,
        };
        assert_eq!(
            best(&[a, b]),
            Wrk {
                p50_ms: 0.3,
                requests_per_second: 9000.0,
                errors: 1
            }
        );
    }
}

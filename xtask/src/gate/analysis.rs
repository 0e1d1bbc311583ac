//! The analysis gate of a canary: Prometheus queries judged against limits
//! after each step. Every measurement is recorded with the release (query,
//! value, limit, verdict, step), so `history` can say why a release was
//! judged as it was. No data, a value that is not a number (0/0: no
//! requests), or Prometheus not answering is *inconclusive*, which fails the
//! step like a bad value: a canary is never promoted on missing evidence. A
//! `dry_run` query is measured and recorded but never decisive.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::environment::{AnalysisConfig, CanaryConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

/// One query's result at one step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    /// The canary's share of the traffic (percent) when it was measured.
    pub step: u8,
    pub name: String,
    /// The query as sent (placeholders filled in).
    pub query: String,
    pub value: Option<f64>,
    /// `<= 0.05`, `>= 0.9`, or both.
    pub limit: String,
    pub verdict: Verdict,
    /// Why it is inconclusive, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    pub at: String,
}

impl Measurement {
    /// Decisive and not a pass: the step fails.
    pub fn fails(&self) -> bool {
        !self.dry_run && self.verdict != Verdict::Pass
    }

    /// One line for reports: `error-rate = 0.2013 (limit <= 0.05): fail at 10 %`.
    pub fn describe(&self) -> String {
        let value = self.value.map_or_else(|| "no value".to_owned(), shown);
        let verdict = match self.verdict {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        };
        let note = self
            .note
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        let dry = if self.dry_run { " [dry run]" } else { "" };
        format!(
            "{} = {value} (limit {}): {verdict}{note} at {} %{dry}; query: {}",
            self.name, self.limit, self.step, self.query
        )
    }
}

/// A number for people: four significant digits, no float noise.
pub fn shown(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return format!("{value}");
    }
    let digits = (3 - value.abs().log10().floor() as i32).max(0) as usize;
    let text = format!("{value:.digits$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// The limit as text, for the record.
pub fn limit_of(a: &AnalysisConfig) -> String {
    match (a.min, a.max) {
        (Some(min), Some(max)) => format!(">= {} and <= {}", shown(min), shown(max)),
        (Some(min), None) => format!(">= {}", shown(min)),
        (None, Some(max)) => format!("<= {}", shown(max)),
        (None, None) => "none".into(),
    }
}

/// The verdict on a value: pure, so the rules are tested without Prometheus.
pub fn judge(a: &AnalysisConfig, value: Option<f64>) -> (Verdict, Option<String>) {
    let Some(v) = value else {
        return (Verdict::Inconclusive, Some("no data".into()));
    };
    if !v.is_finite() {
        return (
            Verdict::Inconclusive,
            Some(format!("{v}: no requests to judge")),
        );
    }
    let low = a.min.is_some_and(|min| v < min);
    let high = a.max.is_some_and(|max| v > max);
    if low || high {
        (Verdict::Fail, None)
    } else {
        (Verdict::Pass, None)
    }
}

/// `{{canary}}` and `{{stable}}` filled with a regex of each release's servers.
pub fn fill(query: &str, canary: &[String], stable: &[String]) -> String {
    let alternatives = |servers: &[String]| {
        if servers.is_empty() {
            // Matches no server: the query then has no data, which is inconclusive.
            "^$".to_owned()
        } else {
            servers.join("|")
        }
    };
    query
        .replace("{{canary}}", &alternatives(canary))
        .replace("{{stable}}", &alternatives(stable))
}

/// The first value of an instant-query answer, or why there is none.
pub fn value_of(answer: &serde_json::Value) -> Result<Option<f64>, String> {
    if answer["status"] != "success" {
        return Err(format!(
            "Prometheus answered {}: {}",
            answer["status"],
            answer["error"].as_str().unwrap_or("no error text")
        ));
    }
    let data = &answer["data"];
    let sample = match data["resultType"].as_str() {
        Some("vector") => data["result"][0]["value"][1].clone(),
        Some("scalar") => data["result"][1].clone(),
        other => return Err(format!("unexpected result type {other:?}")),
    };
    Ok(sample.as_str().and_then(|s| s.parse::<f64>().ok()))
}

/// Runs every query of `config` for one step.
pub async fn measure(
    config: &CanaryConfig,
    step: u8,
    canary: &[String],
    stable: &[String],
) -> Vec<Measurement> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(config.query_timeout_ms))
        .build();
    let url = format!(
        "{}/api/v1/query",
        config.prometheus_url.trim_end_matches('/')
    );
    let mut out = Vec::new();
    for a in &config.analysis {
        let query = fill(&a.query, canary, stable);
        let answered = match &client {
            Ok(client) => ask(client, &url, &query).await,
            Err(e) => Err(format!("building the Prometheus client: {e}")),
        };
        let (verdict, note, value) = match answered {
            Ok(value) => {
                let (verdict, note) = judge(a, value);
                (verdict, note, value)
            }
            Err(why) => (Verdict::Inconclusive, Some(why), None),
        };
        out.push(Measurement {
            step,
            name: a.name.clone(),
            query,
            value,
            limit: limit_of(a),
            verdict,
            note,
            dry_run: a.dry_run,
            at: crate::deploy::release::now(),
        });
    }
    out
}

async fn ask(client: &reqwest::Client, url: &str, query: &str) -> Result<Option<f64>, String> {
    let url = reqwest::Url::parse_with_params(url, &[("query", query)])
        .map_err(|e| format!("Prometheus URL {url}: {e}"))?;
    let response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| format!("Prometheus at {url} did not answer: {e}"))?;
    let answer: serde_json::Value = response
        .json()
        .await
        .map_err(|e| format!("Prometheus at {url}: not JSON: {e}"))?;
    value_of(&answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(min: Option<f64>, max: Option<f64>) -> AnalysisConfig {
        AnalysisConfig {
            name: "error-rate".into(),
            query: "q".into(),
            min,
            max,
            dry_run: false,
        }
    }

    #[test]
    fn missing_or_undefined_values_are_inconclusive_never_a_pass() {
        let a = rule(None, Some(0.05));
        assert_eq!(judge(&a, None).0, Verdict::Inconclusive);
        assert_eq!(judge(&a, Some(f64::NAN)).0, Verdict::Inconclusive);
        assert_eq!(judge(&a, Some(0.2)).0, Verdict::Fail);
        assert_eq!(judge(&a, Some(0.01)).0, Verdict::Pass);
        assert_eq!(judge(&rule(Some(0.9), None), Some(0.5)).0, Verdict::Fail);
    }

    #[test]
    fn prometheus_answers_become_values_or_reasons() {
        let vector = serde_json::json!({"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.0,"0.25"]}]}});
        assert_eq!(value_of(&vector), Ok(Some(0.25)));
        let empty =
            serde_json::json!({"status":"success","data":{"resultType":"vector","result":[]}});
        assert_eq!(value_of(&empty), Ok(None));
        let nan = serde_json::json!({"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.0,"NaN"]}]}});
        assert!(value_of(&nan).unwrap().unwrap().is_nan());
        let bad = serde_json::json!({"status":"error","error":"parse error"});
        assert!(value_of(&bad).unwrap_err().contains("parse error"));
    }

    #[test]
    fn placeholders_become_server_regexes_and_none_matches_nothing() {
        let q = r#"sum(x{server=~"{{canary}}"}) / sum(x{server=~"{{stable}}"})"#;
        assert_eq!(
            fill(q, &["s4".into(), "s5".into()], &[]),
            r#"sum(x{server=~"s4|s5"}) / sum(x{server=~"^$"})"#
        );
    }

    #[test]
    fn a_dry_run_is_recorded_but_never_fails_the_step() {
        let mut m = Measurement {
            step: 10,
            name: "p95".into(),
            query: "q".into(),
            value: Some(3.0),
            limit: "<= 1".into(),
            verdict: Verdict::Fail,
            note: None,
            dry_run: true,
            at: String::new(),
        };
        assert!(!m.fails());
        m.dry_run = false;
        assert!(m.fails());
        assert_eq!(shown(0.200_000_000_1), "0.2");
        assert_eq!(shown(1234.5678), "1235");
        assert!(m.describe().contains("p95 = 3 (limit <= 1): fail at 10 %"));
    }
}

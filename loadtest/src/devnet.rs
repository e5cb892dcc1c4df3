//! The devnet's control endpoints (docs/DEVNET.md): the harness mines a block to start a job
//! fan-out, and reads the pool's Prometheus text for the RandomX mode.

use std::time::Duration;

use serde_json::Value;

/// A client for `http://127.0.0.1:<control port>/devnet/...`.
#[derive(Clone)]
pub struct Control {
    base: String,
    http: reqwest::Client,
}

impl Control {
    /// A client for the control base URL (e.g. `http://127.0.0.1:21003`).
    pub fn new(base: &str) -> Control {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap_or_default();
        Control { base: base.trim_end_matches('/').to_string(), http }
    }

    /// `POST /devnet/mine {"count":n}`: returns the new top height.
    pub async fn mine(&self, count: u64) -> Result<u64, String> {
        let url = format!("{}/devnet/mine", self.base);
        let reply = self
            .http
            .post(&url)
            .json(&serde_json::json!({ "count": count }))
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e} (is the devnet running with its control port there?)"))?;
        let status = reply.status();
        let body: Value = reply.json().await.map_err(|e| format!("POST {url}: unreadable answer: {e}"))?;
        if !status.is_success() {
            return Err(format!("POST {url}: HTTP {status}: {body}"));
        }
        body["height"].as_u64().ok_or_else(|| format!("POST {url}: no height in {body}"))
    }

    /// `GET /devnet/state`: the top block's height.
    pub async fn height(&self) -> Result<u64, String> {
        let url = format!("{}/devnet/state", self.base);
        let body: Value = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e} (is the devnet running with its control port there?)"))?
            .json()
            .await
            .map_err(|e| format!("GET {url}: unreadable answer: {e}"))?;
        body["height"].as_u64().ok_or_else(|| format!("GET {url}: no height in {body}"))
    }
}

/// The value of an unlabelled (or first labelled) sample of `metric` in Prometheus text.
pub fn metric_value(text: &str, metric: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let rest = l.strip_prefix(metric)?;
        let rest = if rest.starts_with('{') { &rest[rest.find('}')? + 1..] } else { rest };
        if !rest.starts_with(' ') {
            return None;
        }
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The sum over every labelled series of `metric` (e.g. a histogram's `_sum` for all modes).
pub fn metric_total(text: &str, metric: &str) -> Option<f64> {
    let mut found = None;
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = l.strip_prefix(metric) else { continue };
        let rest = if rest.starts_with('{') {
            match rest.find('}') {
                Some(end) => &rest[end + 1..],
                None => continue,
            }
        } else {
            rest
        };
        if !rest.starts_with(' ') {
            continue;
        }
        if let Some(v) = rest.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// Fetches a Prometheus endpoint's text.
pub async fn fetch_metrics(url: &str) -> Result<String, String> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
    http.get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?
        .text()
        .await
        .map_err(|e| format!("GET {url}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prometheus_samples() {
        let text = "# HELP pastella_pool_randomx_fast_mode 1 when fast\n\
                    # TYPE pastella_pool_randomx_fast_mode gauge\n\
                    pastella_pool_randomx_fast_mode 1\n\
                    pastella_pool_randomx_fast_mode_other 5\n\
                    pastella_pool_stratum_connections{port=\"3333\"} 9876\n";
        assert_eq!(metric_value(text, "pastella_pool_randomx_fast_mode"), Some(1.0));
        assert_eq!(metric_value(text, "pastella_pool_stratum_connections"), Some(9876.0));
        assert_eq!(metric_value(text, "pastella_pool_missing"), None);
        let hist = "pastella_pool_verify_seconds_sum{mode=\"light\"} 2.5\n\
                    pastella_pool_verify_seconds_sum{mode=\"fast\"} 0.5\n\
                    pastella_pool_verify_seconds_count{mode=\"light\"} 100\n";
        assert_eq!(metric_total(hist, "pastella_pool_verify_seconds_sum"), Some(3.0));
        assert_eq!(metric_total(hist, "pastella_pool_verify_seconds_count"), Some(100.0));
        assert_eq!(metric_total(hist, "pastella_pool_verify_seconds"), None);
    }
}

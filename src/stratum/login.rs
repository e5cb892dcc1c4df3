//! The login string (spec §4): `[solo:|prop:]ADDRESS[<sep>DIFF]`, worker name from `rigid` or
//! `pass`. Addresses get the daemon's full validation, so a typo is refused at login instead of
//! accruing a balance the wallet can never pay.

use crate::chain::{Address, AddressError};
use crate::config::{FixedDiffConfig, VarDiffConfig};

/// A validated login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The payout address.
    pub address: Address,
    /// The address text, the key of all the miner's records.
    pub login: String,
    /// Solo mining (`solo:` prefix).
    pub solo: bool,
    /// Fixed difficulty requested with `ADDRESS.DIFF`, clamped to the vardiff bounds.
    pub fixed_diff: Option<u64>,
    /// Worker name, sanitised for Redis keys and members.
    pub worker: String,
}

/// Why a login is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// No login string.
    #[error("Missing login")]
    Missing,
    /// The address is not a valid Pastella address.
    #[error("Invalid address used for login: {0}")]
    Address(#[from] AddressError),
}

/// Longest worker name kept.
pub const MAX_WORKER_LEN: usize = 64;

/// Parses and validates a login.
pub fn parse(
    login: &str,
    pass: Option<&str>,
    rigid: Option<&str>,
    fixed: &FixedDiffConfig,
    vardiff: &VarDiffConfig,
) -> Result<Login, LoginError> {
    let login = login.trim();
    if login.is_empty() {
        return Err(LoginError::Missing);
    }
    let (solo, rest) = strip_prefix_ci(login, "solo:")
        .map(|rest| (true, rest))
        .or_else(|| strip_prefix_ci(login, "prop:").map(|rest| (false, rest)))
        .unwrap_or((false, login));
    // `ADDRESS.DIFF`: the last separator, only if fewer than 32 characters follow it.
    let (address_text, diff_text) = match rest.rfind(fixed.address_separator) {
        Some(at) if rest.len() - at - 1 < 32 => (&rest[..at], Some(&rest[at + fixed.address_separator.len_utf8()..])),
        _ => (rest, None),
    };
    let address = Address::parse(address_text)?;
    let fixed_diff = match diff_text {
        Some(text) if fixed.enabled => match text.parse::<u64>() {
            Ok(diff) => Some(diff.clamp(vardiff.min_diff, vardiff.max_diff)),
            Err(_) => {
                tracing::debug!(login, "fixed difficulty {text:?} is not an integer; using the port difficulty");
                None
            }
        },
        _ => None,
    };
    let worker = rigid.filter(|r| !r.trim().is_empty()).or(pass).unwrap_or("");
    Ok(Login { address, login: address.encode(), solo, fixed_diff, worker: sanitize_worker(worker) })
}

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

/// Keeps `[A-Za-z0-9._@+-]`, replaces anything else (`:` and `~` separate fields in Redis
/// members) with `_`, caps the length, and names an empty worker `default` so its shares still
/// count in the pool hashrate (the old pool dropped them).
pub fn sanitize_worker(raw: &str) -> String {
    let cleaned: String = raw
        .trim()
        .chars()
        .take(MAX_WORKER_LEN)
        .map(|c| if c.is_ascii_alphanumeric() || "._@+-".contains(c) { c } else { '_' })
        .collect();
    if cleaned.is_empty() {
        "default".to_string()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR: &str = "PAS1LqBfSfzeu7Khipaj1JbSvkJfP6yJ8Z16wZVjSdd75QqM8KTcnF";

    fn cfg() -> (FixedDiffConfig, VarDiffConfig) {
        let (config, _) = crate::config::Config::from_json_str(
            &format!(r#"{{"poolAddress":"{ADDR}","ports":{{"3333":{{"diff":5000,"desc":"x"}}}},"payments":{{"enabled":false}}}}"#),
            "test",
        )
        .unwrap();
        (config.fixed_diff, config.var_diff)
    }

    #[test]
    fn plain_solo_and_fixed_difficulty_logins() {
        let (f, v) = cfg();
        let l = parse(ADDR, Some("rig1"), None, &f, &v).unwrap();
        assert_eq!((l.login.as_str(), l.solo, l.fixed_diff, l.worker.as_str()), (ADDR, false, None, "rig1"));
        let l = parse(&format!("SOLO:{ADDR}.50000"), Some("x"), Some("rigA"), &f, &v).unwrap();
        assert_eq!((l.solo, l.fixed_diff, l.worker.as_str()), (true, Some(50000), "rigA"));
        let l = parse(&format!("prop:{ADDR}.5"), None, None, &f, &v).unwrap();
        assert_eq!((l.solo, l.fixed_diff, l.worker.as_str()), (false, Some(v.min_diff), "default"));
        let l = parse(&format!("{ADDR}.abc"), Some("w:1~2"), None, &f, &v).unwrap();
        assert_eq!((l.fixed_diff, l.worker.as_str()), (None, "w_1_2"));
    }

    #[test]
    fn refuses_missing_and_invalid_addresses_with_the_daemon_reason() {
        let (f, v) = cfg();
        assert_eq!(parse("  ", None, None, &f, &v), Err(LoginError::Missing));
        let err = parse(&ADDR[..50], None, None, &f, &v).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid address used for login: The address should be 54 characters, but it is 50 characters. Integrated addresses are not supported in transparent mode."
        );
        let typo = format!("{}G", &ADDR[..53]);
        assert!(parse(&typo, None, None, &f, &v).unwrap_err().to_string().contains("invalid checksum"));
    }
}

//! Sign-in throttling that slows guessing down without letting anyone lock an office out.
//!
//! Failures are counted in fixed windows of [`WINDOW_MINUTES`] under three keys:
//!
//! - **the account from one address** (`pair:<kind>:<login>@<client>`): from the
//!   [`SLOW_AFTER`]th failure each failed answer is slowed down; at [`PAIR_LIMIT`] that account
//!   is refused from that address, even with the right password, until the window ends. This is
//!   what stops one attacker guessing one password.
//! - **the account from everywhere** (`login:<kind>:<login>`): at [`ACCOUNT_LIMIT`] the account
//!   is refused from every address that is not a known client of it (see below): a guesser
//!   spread over many addresses gets no further, the agent at their usual desk still signs in.
//! - **the address against every account** (`addr:<client>`): at [`ADDRESS_LIMIT`] the
//!   address is refused for every account of which it is not a known client: password
//!   spraying from one address stops, the agents who work behind it still sign in.
//!
//! A **known client** of an account is an address from which it signed in with the right
//! password in the last [`KNOWN_CLIENT_DAYS`] days. Logins count whether the account exists
//! or not, so the answers never reveal which do. IPv6 clients count by their /64 (one
//! subscriber's prefix), so walking through one's own addresses gains nothing.
//!
//! The account keys are counted *before* the password is checked and given back when it is
//! right (or the attempt is refused), so a burst of parallel guesses cannot slip past a limit
//! while the first ones are being verified.

use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use sqlx::{PgPool, Row};

pub const WINDOW_MINUTES: i64 = 15;
/// Failures of one account from one address before each failed answer is slowed down.
pub const SLOW_AFTER: i32 = 3;
/// Failures of one account from one address that refuse it from there.
pub const PAIR_LIMIT: i32 = 5;
/// Failures of one account from all addresses that refuse it from addresses it is not known at.
pub const ACCOUNT_LIMIT: i32 = 20;
/// Failures from one address against all accounts that refuse it for accounts not known there.
pub const ADDRESS_LIMIT: i32 = 20;
/// How long a successful sign-in makes its address a known client of the account.
pub const KNOWN_CLIENT_DAYS: i64 = 30;

/// The throttle keys of one sign-in attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub tenant: String,
    /// `<kind>:<login>`, the account as a known-client record names it.
    pub account: String,
    /// The client's address as counted (an IPv6 address as its /64).
    pub client: String,
}

impl Attempt {
    pub fn new(tenant: &str, kind: &str, login: &str, client: &str) -> Self {
        Attempt {
            tenant: tenant.to_string(),
            account: format!("{kind}:{login}"),
            client: client_key(client),
        }
    }

    fn pair_key(&self) -> String {
        format!("pair:{}@{}", self.account, self.client)
    }

    fn account_key(&self) -> String {
        format!("login:{}", self.account)
    }

    fn address_key(&self) -> String {
        format!("addr:{}", self.client)
    }
}

/// How a client address is counted: IPv4 as it is, IPv6 by its /64.
pub fn client_key(client: &str) -> String {
    match client.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(IpAddr::V6(v6)) => {
            let prefix = u128::from(v6) & (u128::MAX << 64);
            format!("{}/64", std::net::Ipv6Addr::from(prefix))
        }
        Ok(ip) => ip.to_string(),
        Err(_) => client.trim().to_string(),
    }
}

/// Failures under one key in its current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub failures: i32,
    pub window_ends: DateTime<Utc>,
}

/// What bears on an attempt: the failures before it under each key, and whether its address
/// is a known client of the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub pair: Count,
    pub account: Count,
    pub address: Count,
    pub known_client: bool,
}

/// Whether an attempt may have its password checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Check,
    Refuse { until: DateTime<Utc> },
}

/// The rules of the module documentation, as a pure function of the counts.
pub fn decide(c: &Counts) -> Verdict {
    let mut until: Option<DateTime<Utc>> = None;
    let mut over = |count: &Count, limit: i32| {
        if count.failures >= limit {
            until = until.max(Some(count.window_ends));
        }
    };
    over(&c.pair, PAIR_LIMIT);
    if !c.known_client {
        over(&c.account, ACCOUNT_LIMIT);
        over(&c.address, ADDRESS_LIMIT);
    }
    match until {
        Some(until) => Verdict::Refuse { until },
        None => Verdict::Check,
    }
}

/// How long to hold a failed answer, given the failures of the account from that address
/// (this one included).
pub fn delay(pair_failures: i32) -> std::time::Duration {
    let extra = (pair_failures - SLOW_AFTER + 1).max(0) as u64;
    std::time::Duration::from_millis((extra * 500).min(2000))
}

/// Adds one to each key (starting a new window where the last one ended), returning the
/// counts after.
const BUMP: &str = "insert into auth_throttle (tenant, key, failures, first_failure_at)
    select $1, k, 1, now() from unnest($2::text[]) k
    on conflict (tenant, key) do update set
      failures = case when auth_throttle.first_failure_at < now() - make_interval(mins => $3)
                      then 1 else auth_throttle.failures + 1 end,
      first_failure_at = case when auth_throttle.first_failure_at < now() - make_interval(mins => $3)
                      then now() else auth_throttle.first_failure_at end
    returning key, failures, first_failure_at";

async fn bump(
    pool: &PgPool,
    tenant: &str,
    keys: &[String],
) -> Result<Vec<(String, Count)>, sqlx::Error> {
    let rows = sqlx::query(BUMP)
        .bind(tenant)
        .bind(keys)
        .bind(WINDOW_MINUTES as i32)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let first: DateTime<Utc> = r.get(2);
            (
                r.get(0),
                Count {
                    failures: r.get(1),
                    window_ends: first + Duration::minutes(WINDOW_MINUTES),
                },
            )
        })
        .collect())
}

async fn give_back(pool: &PgPool, tenant: &str, keys: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update auth_throttle set failures = greatest(failures - 1, 0) where tenant = $1 and key = any($2)",
    )
    .bind(tenant)
    .bind(keys)
    .execute(pool)
    .await?;
    Ok(())
}

/// Counts the attempt against its account keys and reads the rest; the caller must end it
/// with [`refused`], [`succeeded`] or [`failed`].
pub async fn begin(pool: &PgPool, a: &Attempt) -> Result<Counts, sqlx::Error> {
    let bumped = bump(pool, &a.tenant, &[a.pair_key(), a.account_key()]).await?;
    let before = |key: String| {
        bumped
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, c)| Count {
                failures: c.failures - 1,
                ..*c
            })
            .expect("both keys bumped")
    };
    let address: Option<(i32, DateTime<Utc>)> = sqlx::query_as(
        "select failures, first_failure_at from auth_throttle
          where tenant = $1 and key = $2 and first_failure_at >= now() - make_interval(mins => $3)",
    )
    .bind(&a.tenant)
    .bind(a.address_key())
    .bind(WINDOW_MINUTES as i32)
    .fetch_optional(pool)
    .await?;
    let known_client: bool = sqlx::query_scalar(
        "select exists(select 1 from auth_known_clients where tenant = $1 and account = $2 and client = $3
                         and last_success_at > now() - make_interval(days => $4))",
    )
    .bind(&a.tenant)
    .bind(&a.account)
    .bind(&a.client)
    .bind(KNOWN_CLIENT_DAYS as i32)
    .fetch_one(pool)
    .await?;
    Ok(Counts {
        pair: before(a.pair_key()),
        account: before(a.account_key()),
        address: address
            .map(|(failures, first)| Count {
                failures,
                window_ends: first + Duration::minutes(WINDOW_MINUTES),
            })
            .unwrap_or(Count {
                failures: 0,
                window_ends: Utc::now(),
            }),
        known_client,
    })
}

/// The attempt was refused unchecked: it does not count.
pub async fn refused(pool: &PgPool, a: &Attempt) -> Result<(), sqlx::Error> {
    give_back(pool, &a.tenant, &[a.pair_key(), a.account_key()]).await
}

/// The password was right: the account's failures from this address are forgiven, the attempt
/// is given back, and the address becomes (or stays) a known client of the account.
pub async fn succeeded(pool: &PgPool, a: &Attempt) -> Result<(), sqlx::Error> {
    sqlx::query("delete from auth_throttle where tenant = $1 and key = $2")
        .bind(&a.tenant)
        .bind(a.pair_key())
        .execute(pool)
        .await?;
    give_back(pool, &a.tenant, &[a.account_key()]).await?;
    sqlx::query(
        "insert into auth_known_clients (tenant, account, client, last_success_at) values ($1, $2, $3, now())
         on conflict (tenant, account, client) do update set last_success_at = now()",
    )
    .bind(&a.tenant)
    .bind(&a.account)
    .bind(&a.client)
    .execute(pool)
    .await?;
    Ok(())
}

/// The password was wrong (or the login unknown): the failure counts against the address too.
/// Returns how long to hold the answer.
pub async fn failed(
    pool: &PgPool,
    a: &Attempt,
    counts: &Counts,
) -> Result<std::time::Duration, sqlx::Error> {
    bump(pool, &a.tenant, &[a.address_key()]).await?;
    Ok(delay(counts.pair.failures + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(failures: i32, minutes: i64) -> Count {
        Count {
            failures,
            window_ends: DateTime::<Utc>::from_timestamp(0, 0).unwrap()
                + Duration::minutes(minutes),
        }
    }

    fn counts(pair: i32, account: i32, address: i32, known_client: bool) -> Counts {
        Counts {
            pair: count(pair, 1),
            account: count(account, 2),
            address: count(address, 3),
            known_client,
        }
    }

    fn refused_until(c: Counts) -> Option<i64> {
        match decide(&c) {
            Verdict::Check => None,
            Verdict::Refuse { until } => Some(until.timestamp() / 60),
        }
    }

    #[test]
    fn one_address_guessing_one_account_is_refused_at_the_limit_even_when_known() {
        assert_eq!(refused_until(counts(PAIR_LIMIT - 1, 0, 0, false)), None);
        assert_eq!(refused_until(counts(PAIR_LIMIT, 0, 0, false)), Some(1));
        assert_eq!(refused_until(counts(PAIR_LIMIT, 0, 0, true)), Some(1));
    }

    #[test]
    fn a_busy_account_or_address_still_lets_its_known_clients_in() {
        assert_eq!(refused_until(counts(0, ACCOUNT_LIMIT, 0, false)), Some(2));
        assert_eq!(refused_until(counts(0, ACCOUNT_LIMIT, 0, true)), None);
        assert_eq!(refused_until(counts(0, 0, ADDRESS_LIMIT, false)), Some(3));
        assert_eq!(refused_until(counts(0, 0, ADDRESS_LIMIT, true)), None);
        assert_eq!(
            refused_until(counts(0, ACCOUNT_LIMIT - 1, ADDRESS_LIMIT - 1, false)),
            None
        );
    }

    #[test]
    fn the_refusal_lasts_until_the_last_window_at_fault_ends() {
        assert_eq!(
            refused_until(counts(PAIR_LIMIT, ACCOUNT_LIMIT, ADDRESS_LIMIT, false)),
            Some(3)
        );
    }

    #[test]
    fn failed_answers_slow_down_from_the_third_failure_up_to_two_seconds() {
        assert_eq!(delay(2), std::time::Duration::ZERO);
        assert_eq!(delay(3), std::time::Duration::from_millis(500));
        assert_eq!(delay(4), std::time::Duration::from_millis(1000));
        assert_eq!(delay(40), std::time::Duration::from_millis(2000));
    }

    #[test]
    fn ipv6_clients_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(client_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(client_key("2001:db8:1:2:bbbb::9"), "2001:db8:1:2::/64");
        assert_eq!(client_key("::ffff:198.51.100.7"), "198.51.100.7");
        assert_eq!(client_key("198.51.100.7"), "198.51.100.7");
    }
}

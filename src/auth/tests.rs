use super::*;

fn header(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn auth_with(cost: u32) -> Arc<BasicAuth> {
    let hash = bcrypt::hash("s3cret", cost).unwrap();
    BasicAuth::new(BTreeMap::from([("alice".to_string(), hash)]))
}

fn ip(last: u8) -> Option<IpAddr> {
    Some(IpAddr::from([10, 0, 0, last]))
}

#[tokio::test]
async fn verifies_and_caches_by_hmac() {
    let auth = auth_with(4);
    let good = header("alice", "s3cret");
    assert_eq!(auth.authorize(Some(&good), ip(1)).await, Outcome::Allowed);
    assert_eq!(auth.authorize(Some(&good), ip(1)).await, Outcome::Allowed);
    assert_eq!(auth.verifications(), 1, "the second request hit the cache");
    assert_eq!(auth.cache_len(), 1);
    // The cache key is a keyed MAC: another process (key) maps the same credentials
    // elsewhere, and it is not the password nor a plain hash of it.
    let other = auth_with(4);
    assert_ne!(
        auth.cache_key("alice", "s3cret"),
        other.cache_key("alice", "s3cret")
    );
    assert_ne!(&auth.cache_key("alice", "s3cret")[..6], b"s3cret");
    assert_eq!(
        auth.authorize(Some(&header("alice", "wrong")), ip(2)).await,
        Outcome::Denied
    );
    assert_eq!(
        auth.authorize(Some(&header("mallory", "s3cret")), ip(3))
            .await,
        Outcome::Denied
    );
    assert_eq!(
        auth.authorize(Some("Basic !!!"), ip(4)).await,
        Outcome::Denied
    );
    assert_eq!(
        auth.authorize(Some("Bearer x"), ip(5)).await,
        Outcome::Denied
    );
    assert_eq!(auth.authorize(None, ip(6)).await, Outcome::Denied);
}

#[tokio::test]
async fn the_basic_scheme_matches_case_insensitively() {
    let auth = auth_with(4);
    let token = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    for scheme in ["Basic", "basic", "BASIC", "bAsIc"] {
        assert_eq!(
            auth.authorize(Some(&format!("{scheme} {token}")), None)
                .await,
            Outcome::Allowed,
            "{scheme}"
        );
    }
    assert_eq!(parse_basic(&format!("Basicx {token}")), None);
    assert_eq!(
        parse_basic("basic YTpiOmM="),
        Some(("a".to_string(), "b:c".to_string())),
        "the password may hold colons"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_verifications_are_bounded() {
    let auth = auth_with(6);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let auth = auth.clone();
            tokio::spawn(async move {
                auth.authorize(Some(&header("alice", &format!("wrong{i}"))), ip(i))
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), Outcome::Denied);
    }
    assert_eq!(auth.verifications(), 16);
    eprintln!(
        "figures: 16 concurrent wrong logins, at most {} bcrypt verifications at once (bound {})",
        auth.peak_verifications(),
        max_verifications()
    );
    assert!(
        auth.peak_verifications() <= max_verifications(),
        "{} verifications ran at once (bound {})",
        auth.peak_verifications(),
        max_verifications()
    );
}

#[tokio::test]
async fn repeated_failures_from_one_address_are_throttled() {
    let auth = auth_with(4);
    let bad = header("alice", "wrong");
    for _ in 0..FREE_FAILURES + 1 {
        assert_eq!(auth.authorize(Some(&bad), ip(7)).await, Outcome::Denied);
    }
    let before = auth.verifications();
    let Outcome::Throttled(wait) = auth
        .authorize(Some(&header("alice", "s3cret")), ip(7))
        .await
    else {
        panic!("not throttled")
    };
    assert!(wait <= FIRST_DELAY, "{wait:?}");
    assert_eq!(
        auth.verifications(),
        before,
        "no bcrypt work while throttled"
    );
    // Another address is not affected.
    assert_eq!(
        auth.authorize(Some(&header("alice", "s3cret")), ip(8))
            .await,
        Outcome::Allowed
    );
    // The delay doubles with each further failure.
    tokio::time::sleep(wait).await;
    assert_eq!(auth.authorize(Some(&bad), ip(7)).await, Outcome::Denied);
    let Some(second) = auth.throttle.blocked(IpAddr::from([10, 0, 0, 7])) else {
        panic!("not blocked again")
    };
    assert!(second > FIRST_DELAY, "{second:?}");
    tokio::time::sleep(second).await;
    // A success forgets the address.
    assert_eq!(
        auth.authorize(Some(&header("alice", "s3cret")), ip(7))
            .await,
        Outcome::Allowed
    );
    assert_eq!(auth.authorize(Some(&bad), ip(7)).await, Outcome::Denied);
    assert_eq!(auth.authorize(Some(&bad), ip(7)).await, Outcome::Denied);
}

#[tokio::test]
async fn unknown_users_cost_what_known_users_cost() {
    let auth = auth_with(8);
    assert_eq!(auth.dummy_cost(), Some(8));
    let time = |user: &'static str, i: u8| {
        let auth = auth.clone();
        async move {
            let started = Instant::now();
            let outcome = auth
                .authorize(Some(&header(user, "wrong")), ip(100 + i))
                .await;
            assert_eq!(outcome, Outcome::Denied);
            started.elapsed()
        }
    };
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..3 {
        known.push(time("alice", i).await);
        unknown.push(time("nobody", 10 + i).await);
    }
    known.sort();
    unknown.sort();
    let ratio = unknown[1].as_secs_f64() / known[1].as_secs_f64();
    eprintln!(
        "figures: cost-8 user, median of 3: wrong password {:?}, unknown user {:?} (ratio {ratio:.2})",
        known[1], unknown[1]
    );
    assert!(
        (0.4..2.5).contains(&ratio),
        "unknown user {:?} vs known user {:?}",
        unknown[1],
        known[1]
    );
}

#[test]
fn malformed_hashes_are_rejected() {
    let good = bcrypt::hash("x", 4).unwrap();
    assert_eq!(check_hash(&good), Ok(4));
    assert!(check_hash("$2y$10$abcdefghijklmnopqrstuu5/mXKVyVzWcyANdbrKqvPVqQS33yy1K").is_ok());
    for bad in [
        "plaintext",
        "$2y$10$short",
        "$2y$1$abcdefghijklmnopqrstuu5/mXKVyVzWcyANdbrKqvPVqQS33yy1K",
        "$2y$99$abcdefghijklmnopqrstuu5/mXKVyVzWcyANdbrKqvPVqQS33yy1K",
        "$2q$10$abcdefghijklmnopqrstuu5/mXKVyVzWcyANdbrKqvPVqQS33yy1K",
        "$2y$10$abcdefghijklmnopqrstuu5/mXKVyVzWcyANdbrKqvPVqQS33yy1!",
        "$2y$10$abcdefghijklmnopqrstuu5/mXKVyVzWcyANdbrKqvPVqQS33yy1Kx",
        "x$2y$10$abcdefghijklmnopqrstuu5/mXKVyVzWcyANdbrKqvPVqQS33yy1K",
    ] {
        assert!(check_hash(bad).is_err(), "{bad}");
    }
}

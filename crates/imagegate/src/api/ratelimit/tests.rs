use super::*;
use std::time::Duration;

/// The node's own bucket alone, at a chosen instant.
fn check_at(rl: &RateLimiter, account: usize, action: &str, now: Instant) -> Result<(), u32> {
    if !rl.enabled {
        return Ok(());
    }
    let action = ActionId::of(action).ok_or(0u32)?;
    let (bucket, rate) = rl.bucket(account, action).ok_or(0u32)?;
    match take_local(bucket, rate, now) {
        Local::Taken => Ok(()),
        Local::Empty | Local::SharedEmpty => Err(rate),
    }
}

#[test]
fn burst_then_refill() {
    let rl = RateLimiter::new(true, 2);
    let t0 = Instant::now();
    for _ in 0..10 {
        check_at(&rl, 0, "ImportImage", t0).unwrap();
    }
    assert_eq!(check_at(&rl, 0, "ImportImage", t0), Err(10));
    // Other actions and other accounts have their own buckets.
    check_at(&rl, 0, "DescribeImages", t0).unwrap();
    check_at(&rl, 1, "ImportImage", t0).unwrap();
    // A tenth of a second gives one token back at 10/s.
    let t1 = t0 + Duration::from_millis(100);
    check_at(&rl, 0, "ImportImage", t1).unwrap();
    assert!(check_at(&rl, 0, "ImportImage", t1).is_err());
    // Never more than one second's burst, however long the pause.
    let t2 = t1 + Duration::from_secs(3600);
    for _ in 0..10 {
        check_at(&rl, 0, "ImportImage", t2).unwrap();
    }
    assert!(check_at(&rl, 0, "ImportImage", t2).is_err());
}

#[test]
fn disabled_never_limits() {
    let rl = RateLimiter::new(false, 1);
    let t0 = Instant::now();
    for _ in 0..1000 {
        check_at(&rl, 0, "ImportImage", t0).unwrap();
    }
}

#[test]
fn documented_rates() {
    assert_eq!(rate_for("ImportImage"), 10);
    assert_eq!(rate_for("DescribeImages"), 40);
    assert_eq!(rate_for("DescribeImportImageOs"), 288);
    assert_eq!(rate_for("DescribeImageQuota"), 20);
}

#[test]
fn a_shared_refusal_gives_the_token_back_and_holds_until_the_next_token() {
    let rl = RateLimiter::new(true, 1);
    let action = ActionId::of("ImportImage").unwrap();
    let (bucket, rate) = rl.bucket(0, action).unwrap();
    let t0 = Instant::now();
    assert_eq!(take_local(bucket, rate, t0), Local::Taken);
    // The shared bucket refused (another node took its tokens): the token
    // goes back, and for the next 50 ms the node refuses on its own.
    give_back(bucket, rate, t0, t0 + Duration::from_millis(50));
    let t1 = t0 + Duration::from_millis(49);
    assert_eq!(take_local(bucket, rate, t1), Local::SharedEmpty);
    // Refusing without asking took nothing: all ten tokens are there after.
    let t2 = t0 + Duration::from_millis(50);
    for _ in 0..10 {
        assert_eq!(take_local(bucket, rate, t2), Local::Taken);
    }
    assert_eq!(take_local(bucket, rate, t2), Local::Empty);
}

#[tokio::test]
async fn without_shared_buckets_check_is_the_nodes_bucket() {
    let rl = RateLimiter::new(true, 1);
    assert!(!rl.is_shared());
    for _ in 0..10 {
        rl.check(0, "100000000001", "ImportImage").await.unwrap();
    }
    assert_eq!(
        rl.check(0, "100000000001", "ImportImage").await,
        Err(Exceeded { rate: 10 })
    );
    // Unknown actions and accounts are not limited here.
    rl.check(0, "100000000001", "NoSuchAction").await.unwrap();
    rl.check(7, "100000000009", "ImportImage").await.unwrap();
}

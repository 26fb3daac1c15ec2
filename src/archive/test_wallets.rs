//! The TEST-ONLY Arweave wallets of tests/data/wallets/ (made by arweave-js with tests/js/make-test-wallets.mjs),
//! loaded once per test binary: their private keys are public, they must never hold anything.

use std::sync::LazyLock;

use crate::archive::jwk::Jwk;

pub(crate) const A_JSON: &[u8] = include_bytes!("../../tests/data/wallets/test-only-a.json");
pub(crate) const B_JSON: &[u8] = include_bytes!("../../tests/data/wallets/test-only-b.json");
/// Wallet A's address as arweave-js `jwkToAddress` gives it.
pub(crate) const A_ADDRESS: &str = "XJsa48ujt_xBxqkxKAU4ZLkt50Q56rHX6TR5iQdE2mY";
/// Wallet B's address as arweave-js `jwkToAddress` gives it.
pub(crate) const B_ADDRESS: &str = "eH_9Th3-ab7jWcH1Bo_tK0YE4POiC9uAebph5ZlgjMg";
/// arweave-js's signature (largest PSS salt) of "zipIQ" by wallet A: `node tests/js/arweave-sign.mjs`.
pub(crate) const A_SIGNATURE_OF_ZIPIQ: &str = "eL1uN8c87LqeCm8CLqzTNp5Aoeg9OpXv6lr-cRRaZXPszIvFv1DURdB-_w3xWnK6GN5byfB8kpVhh7Wc8InmaImvINxcyICcZGGF5GSJDwIgVMicBUNeZPY4bc5l35Hq1uQ8TKx6XICB4TU9OyDRLqyAkJihppXs1X1vkEbL552W3hkKk9Pha2lSTM6V7uZFRr1Aevs_91Z94pgGvn6il0IdDPe1uQDdA8c-ozzDXMWbNFdJBri8_eWThW3TzVcn_bwI2XzijCiHF1qiroUswE25upt0FwyxxNDQikI21U7dtmDpaJpCdIS_d-E9v0XsvvSodA7H2bE3tZO1pW5lybN8Y8NuZQjJLr5H4dbAkqPX6j6bfC8PNhuNEsgd0APKPSsS5233hVecUA9L_cDz2cy21sCkdcF2KlVoX-B1uSJLOLXQnVzl9ppOMZpMJcta9DECM_Yp7yfwZ8FS7xCcBwgtY7BRGAty1XqFKlkYDNchzf-H8_SXG6vhZqeSubLrpMAvyGLjznet8MWPJMqV0h-ituu51RAm-7QPrw78f13xGzZw0YErwDdVFJM3mU5H8BYejGGVVwaPC5XGTdA4tB7z8HzHiICdi-9yglN-gA0OzfI9YZJy1uA87URRiZC8LvdWLN615emjylJyz6VnlOrUMIYTDF-2LitM1oTrHRE";

static A: LazyLock<Jwk> =
    LazyLock::new(|| Jwk::from_json(A_JSON).expect("test wallet A is a valid keyfile"));
static B: LazyLock<Jwk> =
    LazyLock::new(|| Jwk::from_json(B_JSON).expect("test wallet B is a valid keyfile"));

pub(crate) fn a() -> &'static Jwk {
    &A
}

pub(crate) fn b() -> &'static Jwk {
    &B
}

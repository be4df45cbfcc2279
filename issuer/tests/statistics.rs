//! Statistical checks of the serial generator on a million serials per format.
//!
//! The EU guessing rule assumes every serial is equally likely and independent
//! of the others; a biased mapping (a plain modulo) or a sequential structure
//! would make some serials likelier than the rule's arithmetic says. These
//! tests look for exactly those faults: per-position character frequencies
//! (chi-square), repeats between consecutive serials, duplicates, and for
//! SGTIN-96 the range and the balance of every bit. One test proves the
//! chi-square check does catch a `byte % n` bias at these sample sizes.
//!
//! Every test prints `statistics seed: <64 hex>`; run again with
//! `STATISTICS_SEED=<64 hex>` to replay a failure. Without it the seed comes
//! from the operating system.
//!
//! Each check is made at α = 10⁻⁶ and the file makes fewer than 100 checks,
//! so a correct generator fails a run by chance less than once in 10,000 runs
//! (family-wise p < 10⁻⁴). Run in release: `cargo test --release --workspace
//! --test statistics`.

use issuer::generator::SerialGenerator;
use issuer::profile::{MarketProfile, SerialFormat};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

/// Serials drawn per test.
const SERIALS: usize = 1_000_000;

/// Significance level of each check; see the module comment.
const ALPHA: f64 = 1e-6;

/// Deviations allowed for the binomial checks (two-sided p ≈ 2 × 10⁻⁹).
const SIGMAS: f64 = 6.0;

/// The seed of this run: `STATISTICS_SEED` or 32 bytes of OS entropy; printed
/// so a failure can be replayed.
fn seed() -> [u8; 32] {
    let seed = match std::env::var("STATISTICS_SEED") {
        Ok(hex) => parse_seed(&hex),
        Err(_) => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).expect("OS entropy");
            seed
        }
    };
    println!("statistics seed: {}", to_hex(&seed));
    seed
}

fn parse_seed(hex: &str) -> [u8; 32] {
    let hex = hex.trim();
    assert!(
        hex.len() == 64 && hex.is_ascii(),
        "STATISTICS_SEED must be 64 hex characters, found {hex:?}"
    );
    let mut seed = [0u8; 32];
    for (byte, pair) in seed.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).expect("ASCII");
        *byte = u8::from_str_radix(pair, 16)
            .unwrap_or_else(|_| panic!("STATISTICS_SEED: {pair:?} is not hex"));
    }
    seed
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// `SERIALS` serials of a fixed-length format, concatenated.
fn draw_fixed(seed: [u8; 32], format: &SerialFormat) -> Vec<u8> {
    let mut generator = SerialGenerator::from_seed(seed);
    let mut out = Vec::with_capacity(SERIALS * format.length() as usize);
    for _ in 0..SERIALS {
        generator.generate(format, &mut out);
    }
    assert_eq!(out.len(), SERIALS * format.length() as usize);
    out
}

/// The upper-tail quantile of the standard normal distribution: the `z` with
/// P(Z > z) = `alpha`, for `alpha` < 0.02425 (Acklam's rational
/// approximation of the tail, relative error below 1.2 × 10⁻⁹).
fn normal_upper_quantile(alpha: f64) -> f64 {
    assert!(alpha > 0.0 && alpha < 0.02425, "tail region only: {alpha}");
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let q = (-2.0 * alpha.ln()).sqrt();
    let numerator = ((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5];
    let denominator = (((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0;
    -(numerator / denominator)
}

/// The chi-square value exceeded with probability `alpha` at `df` degrees of
/// freedom (Wilson–Hilferty: (χ²/df)^(1/3) is nearly normal; slightly
/// conservative for small `df`).
fn chi_square_critical(df: usize, alpha: f64) -> f64 {
    let k = df as f64;
    let spread = 2.0 / (9.0 * k);
    k * (1.0 - spread + normal_upper_quantile(alpha) * spread.sqrt()).powi(3)
}

/// Pearson's chi-square statistic of `counts` against equal frequencies.
fn chi_square(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    let expected = total as f64 / counts.len() as f64;
    counts
        .iter()
        .map(|&count| {
            let deviation = count as f64 - expected;
            deviation * deviation / expected
        })
        .sum()
}

/// Whether `counts` is consistent with equal frequencies at level `ALPHA`;
/// returns the statistic and the critical value for the message.
fn looks_uniform(counts: &[u64]) -> (bool, f64, f64) {
    let statistic = chi_square(counts);
    let critical = chi_square_critical(counts.len() - 1, ALPHA);
    (statistic < critical, statistic, critical)
}

fn assert_uniform(label: &str, counts: &[u64]) {
    let (uniform, statistic, critical) = looks_uniform(counts);
    assert!(
        uniform,
        "{label}: chi-square {statistic:.1} ≥ critical {critical:.1} (df {}, α {ALPHA}); \
         counts {counts:?}",
        counts.len() - 1
    );
}

/// `successes` out of `trials` is within `SIGMAS` standard deviations of the
/// binomial expectation `trials × p`.
fn assert_binomial(label: &str, successes: u64, trials: u64, p: f64) {
    let expected = trials as f64 * p;
    let deviation = (trials as f64 * p * (1.0 - p)).sqrt();
    let distance = (successes as f64 - expected).abs() / deviation;
    assert!(
        distance < SIGMAS,
        "{label}: {successes} of {trials}, expected {expected:.1} ± {deviation:.1} \
         ({distance:.1} σ)"
    );
}

/// Per-position and pooled character counts of concatenated serials, by the
/// character's index in `alphabet`.
fn character_counts(serials: &[u8], format: &SerialFormat) -> (Vec<Vec<u64>>, Vec<u64>) {
    let alphabet = format.alphabet_text().as_bytes();
    let mut index = [usize::MAX; 256];
    for (i, &character) in alphabet.iter().enumerate() {
        index[usize::from(character)] = i;
    }
    let length = format.length() as usize;
    let mut per_position = vec![vec![0u64; alphabet.len()]; length];
    let mut pooled = vec![0u64; alphabet.len()];
    for serial in serials.chunks_exact(length) {
        for (position, &character) in serial.iter().enumerate() {
            let i = index[usize::from(character)];
            assert_ne!(i, usize::MAX, "{character:#04x} not in the alphabet");
            per_position[position][i] += 1;
            pooled[i] += 1;
        }
    }
    (per_position, pooled)
}

fn check_characters_uniform(label: &str, format: &SerialFormat) {
    let serials = draw_fixed(seed(), format);
    let (per_position, pooled) = character_counts(&serials, format);
    for (position, counts) in per_position.iter().enumerate() {
        assert_uniform(&format!("{label} position {position}"), counts);
    }
    assert_uniform(&format!("{label} all positions"), &pooled);
}

fn default_format(profile: MarketProfile) -> SerialFormat {
    profile
        .default_format()
        .expect("profile has a default format")
}

#[test]
fn eu_fmd_characters_uniform_at_every_position() {
    check_characters_uniform("eu-fmd", &default_format(MarketProfile::EuFmd));
}

#[test]
fn br_anvisa_digits_uniform_at_every_position() {
    // 10 does not divide 256: a modulo would favour 0–5.
    check_characters_uniform("br-anvisa", &default_format(MarketProfile::BrAnvisa));
}

#[test]
fn three_characters_uniform_at_every_position() {
    // 256 mod 3 = 1: `byte % 3` would favour the first character.
    let format = SerialFormat::custom("ABC", 20).expect("valid format");
    check_characters_uniform("ABC×20", &format);
}

#[test]
fn consecutive_serials_are_independent() {
    let format = default_format(MarketProfile::EuFmd);
    let length = format.length() as usize;
    let serials = draw_fixed(seed(), &format);
    let serials: Vec<&[u8]> = serials.chunks_exact(length).collect();
    let n = format.alphabet_text().len() as f64;
    let pairs = (serials.len() - 1) as u64;
    let mut same_first = 0;
    let mut same_two = 0;
    for pair in serials.windows(2) {
        same_first += u64::from(pair[0][0] == pair[1][0]);
        same_two += u64::from(pair[0][..2] == pair[1][..2]);
    }
    // For independent uniform characters the overlapping pair events are
    // pairwise independent, so the binomial variance holds.
    assert_binomial("same first character", same_first, pairs, 1.0 / n);
    assert_binomial("same first two characters", same_two, pairs, 1.0 / (n * n));

    // 10^6 draws from 2^60: a duplicate has probability about 4 × 10⁻⁷.
    let mut sorted = serials;
    sorted.sort_unstable();
    let duplicates = sorted.windows(2).filter(|pair| pair[0] == pair[1]).count();
    assert_eq!(duplicates, 0, "duplicate serials");
}

#[test]
fn sgtin96_in_range_without_leading_zero_and_bits_balanced() {
    let mut generator = SerialGenerator::from_seed(seed());
    let mut bit_counts = [0u64; 38];
    let mut out = Vec::with_capacity(12);
    for _ in 0..SERIALS {
        out.clear();
        generator.generate(&SerialFormat::Sgtin96, &mut out);
        let text = std::str::from_utf8(&out).expect("ASCII");
        assert!(!text.starts_with('0'), "leading zero: {text}");
        let value: u64 = text.parse().expect("decimal");
        assert!((1..1 << 38).contains(&value), "out of range: {value}");
        for (bit, count) in bit_counts.iter_mut().enumerate() {
            *count += (value >> bit) & 1;
        }
    }
    for (bit, &count) in bit_counts.iter().enumerate() {
        assert_binomial(&format!("bit {bit} set"), count, SERIALS as u64, 0.5);
    }
}

/// The chi-square check is able to fail: `byte % n` on the same number of
/// characters as the tests above is refused, for 3 characters and for
/// digits, while the same bytes through rejection sampling pass.
#[test]
fn chi_square_detects_modulo_bias() {
    let mut rng = ChaCha20Rng::from_seed(seed());
    for (n, length) in [(3u8, 20), (10, 13)] {
        let mut bytes = vec![0u8; SERIALS * length];
        rng.fill_bytes(&mut bytes);
        let mut biased = vec![0u64; usize::from(n)];
        let mut unbiased = vec![0u64; usize::from(n)];
        let limit = 256 - 256 % u16::from(n);
        for &byte in &bytes {
            biased[usize::from(byte % n)] += 1;
            if u16::from(byte) < limit {
                unbiased[usize::from(byte % n)] += 1;
            }
        }
        let (uniform, statistic, critical) = looks_uniform(&biased);
        assert!(
            !uniform,
            "byte % {n} not detected: chi-square {statistic:.1} < {critical:.1}"
        );
        assert_uniform(&format!("rejection sampling, n = {n}"), &unbiased);
    }
}

#[test]
fn helpers_are_calibrated() {
    // Standard normal table: P(Z > 3.719016) = 10⁻⁴, P(Z > 4.753424) = 10⁻⁶.
    assert!((normal_upper_quantile(1e-4) - 3.719_016).abs() < 1e-5);
    assert!((normal_upper_quantile(1e-6) - 4.753_424).abs() < 1e-5);
    // Exact chi-square quantiles (regularised incomplete gamma); for df 2 the
    // value is −2 ln p. Wilson–Hilferty errs on the high (conservative) side,
    // by at most 10 % (df 2, α 10⁻⁶) and under 2 % from df 9.
    let table = [
        (2, 1e-4, 18.42),
        (9, 1e-4, 33.72),
        (31, 1e-4, 69.11),
        (2, 1e-6, 27.63),
        (9, 1e-6, 44.81),
        (31, 1e-6, 83.64),
    ];
    for (df, alpha, exact) in table {
        let approximate = chi_square_critical(df, alpha);
        assert!(
            approximate >= exact * 0.999 && approximate < exact * 1.10,
            "df {df}, α {alpha}: {approximate:.2} vs {exact}"
        );
    }
    assert_eq!(chi_square(&[5, 5, 5, 5]), 0.0);
    assert_eq!(chi_square(&[10, 0]), 10.0);
    assert_eq!(parse_seed(&"0a".repeat(32)), [10; 32]);
    assert_eq!(to_hex(&[0xab, 0x01]), "ab01");
}

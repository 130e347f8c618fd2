use super::*;
use crate::observe::Dimension;

/// SplitMix64, as the simulator uses.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn word(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len)
            .map(|_| char::from(alphabet[self.next() as usize % alphabet.len()]))
            .collect()
    }
}

const PYTHON: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_";

fn learn(g: &mut Generalisations, paths: &[String]) -> Vec<Merge> {
    let mut merges = Vec::new();
    for p in paths {
        let key = format!("write {}", g.path(p));
        merges.extend(g.learn_path(&key, p, true));
    }
    merges
}

#[test]
fn python_temp_names_learn_one_shape_that_covers_the_next_name() {
    let mut rng = Rng(1);
    let mut g = Generalisations::default();
    let names: Vec<String> = (0..6)
        .map(|_| format!("/tmp/tmp{}", rng.word(PYTHON, 8)))
        .collect();
    let merges = learn(&mut g, &names);
    assert!(!merges.is_empty(), "no shape learned from {names:?}");
    let next = format!("/tmp/tmp{}", rng.word(PYTHON, 8));
    let general = g.path(&next);
    assert!(general.starts_with("/tmp/tmp<[a-z"), "{general}");
    assert!(general.ends_with("]{8}>"), "{general}");
    assert_eq!(g.path(&format!("/tmp/tmp{}", rng.word(PYTHON, 8))), general);
}

#[test]
fn names_inside_random_directories_are_judged_together_once_the_directories_are() {
    // Python's multiprocessing: one listener socket in each random directory, four
    // to eight of them while learning. Four random names make a shape about 98
    // times in 100 (`few_random_names_make_a_shape_and_two_generators_do_not`).
    let mut missed = Vec::new();
    for seed in 0..100 {
        let mut rng = Rng(100 + seed);
        let mut g = Generalisations::default();
        let paths: Vec<String> = (0..4 + seed % 5)
            .map(|_| {
                format!(
                    "/tmp/pymp-{}/listener-{}",
                    rng.word(PYTHON, 8),
                    rng.word(PYTHON, 8)
                )
            })
            .collect();
        learn(&mut g, &paths);
        let next = format!(
            "/tmp/pymp-{}/listener-{}",
            rng.word(PYTHON, 8),
            rng.word(PYTHON, 8)
        );
        let general = g.path(&next);
        if !(general.starts_with("/tmp/pymp-<[") && general.contains("/listener-<[")) {
            missed.push(general);
        }
        // A name of another shape in such a directory is still itself.
        let odd = format!("/tmp/pymp-{}/payload.sh", rng.word(PYTHON, 8));
        assert!(g.path(&odd).ends_with("/payload.sh"), "{}", g.path(&odd));
    }
    assert!(
        missed.len() <= 4,
        "{} of 100 missed: {missed:?}",
        missed.len()
    );
}

#[test]
fn a_name_of_another_shape_in_the_same_directory_stays_itself() {
    let mut rng = Rng(2);
    let mut g = Generalisations::default();
    let names: Vec<String> = (0..8)
        .map(|_| format!("/tmp/tmp{}", rng.word(PYTHON, 8)))
        .collect();
    learn(&mut g, &names);
    assert_eq!(g.path("/tmp/backdoor.sh"), "/tmp/backdoor.sh");
    assert_eq!(g.path("/tmp/tmpabc"), "/tmp/tmpabc");
    assert_eq!(g.path("/tmp/.x/kworker"), "/tmp/.x/kworker");
    // Another prefix, or characters the generator never writes.
    assert!(!g.path("/tmp/xyzabcdefgh").contains('['));
    assert!(!g.path("/tmp/tmpABCDEFGH").contains('['));
}

#[test]
fn mktemp_go_hex_and_fan_out_names_are_learned_by_shape() {
    let mut rng = Rng(3);
    let alnum = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            (0..30)
                .map(|_| format!("/tmp/tmp.{}", rng.word(alnum, 10)))
                .collect(),
            // Learned from its first names, whose 40 characters cannot rule out `_`
            // and `-`.
            "/tmp/tmp.<[A-Za-z0-9_-]{10}>",
        ),
        (
            (0..6)
                .map(|_| format!("/tmp/go-build{}", rng.next() % 4_000_000_000))
                .collect(),
            "/tmp/go-build<[0-9]+>",
        ),
        (
            (0..30)
                .map(|_| {
                    format!(
                        "/var/cache/app/{}/data.bin",
                        rng.word(b"abcdefghijklmnop", 12)
                    )
                })
                .collect(),
            "/var/cache/app/<[a-z_-]{12}>/data.bin",
        ),
    ];
    for (paths, want) in cases {
        let mut g = Generalisations::default();
        learn(&mut g, &paths);
        assert_eq!(g.path(&paths[0]), want, "{paths:?}");
    }
}

#[test]
fn an_alphabet_is_widened_only_by_what_few_names_cannot_rule_out() {
    let mut rng = Rng(5);
    // Six names rarely show `_`; their absence from 48 characters rules nothing out.
    let mut g = Generalisations::default();
    let few: Vec<String> = (0..6)
        .map(|_| {
            format!(
                "/tmp/tmp{}",
                rng.word(b"abcdefghijklmnopqrstuvwxyz0123456789", 8)
            )
        })
        .collect();
    learn(&mut g, &few);
    assert!(g.path("/tmp/tmpab_cd_ef").contains("]{8}>"));
    // Upper-case letters would have shown: they stay outside.
    assert!(!g.path("/tmp/tmpABCDEFGH").contains("]{8}>"));
    // Letters only: digits would have shown, and past learning one odd name with
    // digits does not widen the shape.
    let mut g = Generalisations::default();
    let letters: Vec<String> = (0..30)
        .map(|_| format!("/tmp/tmp{}", rng.word(b"abcdefghijklmnopqrstuvwxyz", 8)))
        .collect();
    learn(&mut g, &letters);
    assert!(g.path("/tmp/tmpabqcdwef").contains("]{8}>"));
    assert!(!g.path("/tmp/tmpab1cd2ef").contains("]{8}>"));
    let odd = "/tmp/tmpab1cd2ef";
    g.learn_path(&format!("write {}", g.path(odd)), odd, false);
    assert!(!g.path("/tmp/tmpxy3zw4vu").contains("]{8}>"));
}

#[test]
fn names_of_two_generators_of_one_length_are_not_one_shape() {
    let mut rng = Rng(6);
    let mut g = Generalisations::default();
    let mut paths = Vec::new();
    for _ in 0..12 {
        paths.push(format!("/tmp/upload-{}", 1000 + rng.next() % 9000));
        paths.push(format!("/tmp/tmp{}", rng.word(PYTHON, 8)));
    }
    learn(&mut g, &paths);
    assert_eq!(g.path("/tmp/upload-4411"), "/tmp/upload-<n>");
    assert!(g.path("/tmp/tmpk2m9zq_x").starts_with("/tmp/tmp<["));
}

#[test]
fn fan_out_cache_levels_are_learned_so_their_files_share_one_shape() {
    let mut rng = Rng(7);
    let hex = b"0123456789abcdef";
    let cases = [
        // npm's content cache: two 2-character levels, then the rest of the hash.
        (
            "/root/.npm/_cacache/content-v2/sha512",
            vec![2, 2],
            124,
            "/root/.npm/_cacache/content-v2/sha512/<[a-f0-9]{2}>/<[a-f0-9]{2}>/<hex>",
        ),
        // pip's HTTP cache: five 1-character levels.
        (
            "/root/.cache/pip/http-v2",
            vec![1, 1, 1, 1, 1],
            51,
            "/root/.cache/pip/http-v2/<[a-f0-9]{1}>/<[a-f0-9]{1}>/<[a-f0-9]{1}>/<[a-f0-9]{1}>/<[a-f0-9]{1}>/<hex>",
        ),
        // git's loose objects.
        (
            "/app/repo/.git/objects",
            vec![2],
            38,
            "/app/repo/.git/objects/<[a-f0-9]{2}>/<hex>",
        ),
    ];
    for (root, levels, leaf, want) in cases {
        let mut g = Generalisations::default();
        let paths: Vec<String> = (0..200)
            .map(|_| {
                let mut p = root.to_owned();
                for len in &levels {
                    p.push('/');
                    p.push_str(&rng.word(hex, *len));
                }
                p.push('/');
                p.push_str(&rng.word(hex, leaf));
                p
            })
            .collect();
        learn(&mut g, &paths);
        let mut parts: Vec<String> = levels.iter().map(|l| rng.word(hex, *l)).collect();
        parts.push(rng.word(hex, leaf));
        let next = format!("{root}/{}", parts.join("/"));
        assert_eq!(g.path(&next), want, "{next}");
    }
}

#[test]
fn short_directory_names_someone_chose_are_not_fan_out() {
    let mut g = Generalisations::default();
    // Letters only (no digit), or words of other lengths: chosen names.
    let paths: Vec<String> = ["a", "b", "c", "d", "e", "f"]
        .iter()
        .chain(["v1", "v2", "app", "db", "ca"].iter())
        .map(|d| format!("/srv/data/{d}/index.json"))
        .collect();
    learn(&mut g, &paths);
    assert_eq!(g.path("/srv/data/a/index.json"), "/srv/data/a/index.json");
    assert_eq!(g.path("/srv/data/v3/index.json"), "/srv/data/v3/index.json");
    // The last component is a file, never a fan-out level.
    let mut g = Generalisations::default();
    let files: Vec<String> = ["1a", "2b", "3c", "4d", "e5", "f6"]
        .iter()
        .map(|d| format!("/srv/data/{d}"))
        .collect();
    learn(&mut g, &files);
    assert!(!g.has_shapes());
}

/// How often random names of one generator are taken for a shape, and names of two
/// generators of one length are not, in a thousand draws of each.
#[test]
fn few_random_names_make_a_shape_and_two_generators_do_not() {
    let mut rng = Rng(8);
    // `every`: one name in that many is another generator's (0: none).
    let mut shaped = |n: usize, every: usize| {
        (0..1000)
            .filter(|_| {
                let names: Vec<String> = (0..n)
                    .map(|i| {
                        if every > 0 && i % every == every - 1 {
                            format!("upload-{}", 1000 + rng.next() % 9000)
                        } else {
                            format!("tmp{}", rng.word(PYTHON, 8))
                        }
                    })
                    .collect();
                let all: Vec<&str> = names.iter().map(String::as_str).collect();
                // From the other generator's name, and from one of the first's.
                shape_of(&all, all[n - 1], n, false).is_some()
                    || (every > 0 && shape_of(&all, all[0], n, false).is_some())
            })
            .count()
    };
    for (n, at_least) in [(3, 930), (4, 980), (8, 970), (16, 970)] {
        let got = shaped(n, 0);
        assert!(got >= at_least, "{n} random names: {got} of 1000 shaped");
    }
    for (n, every) in [(4, 2), (6, 2), (8, 2), (4, 4), (8, 4), (8, 8)] {
        let got = shaped(n, every);
        assert!(
            got <= 20,
            "{n} names, one in {every} of another generator: {got} of 1000 shaped"
        );
    }
}

#[test]
fn words_of_one_length_are_not_taken_for_random_names() {
    let mut g = Generalisations::default();
    let paths: Vec<String> = ["orders", "prices", "stocks", "carts1", "sellers", "buyers"]
        .iter()
        .map(|w| format!("/app/data/{w}.json"))
        .collect();
    assert!(learn(&mut g, &paths).is_empty());
    assert!(!g.has_shapes());
}

#[test]
fn no_shape_is_learned_below_etc_binaries_or_credentials() {
    let mut rng = Rng(4);
    for dir in [
        "/etc/cron.d",
        "/usr/local/bin",
        "/root/.ssh",
        "/var/run/secrets/kubernetes.io/serviceaccount",
        "/etc",
    ] {
        let mut g = Generalisations::default();
        let paths: Vec<String> = (0..10)
            .map(|_| format!("{dir}/tmp{}", rng.word(PYTHON, 8)))
            .collect();
        assert!(learn(&mut g, &paths).is_empty(), "{dir}");
        assert!(!g.has_shapes(), "{dir}");
    }
}

#[test]
fn learned_shapes_survive_as_baseline_keys() {
    let shape = "write /tmp/tmp<[a-z0-9_]{8}>";
    let g = Generalisations::rebuild([(Dimension::File, shape)]);
    assert_eq!(g.path("/tmp/tmpbqymhbpj"), "/tmp/tmp<[a-z0-9_]{8}>");
    assert_eq!(g.path("/tmp/tmpbq_m9bpj"), "/tmp/tmp<[a-z0-9_]{8}>");
    assert_eq!(
        g.cover(
            Dimension::File,
            "write /tmp/tmpbqymhbpj",
            Some("/tmp/tmpbqymhbpj")
        ),
        Some(shape.to_owned())
    );
    assert_eq!(
        NameShape::parse("tmp<[a-z0-9_]{8}>.log").map(|s| s.render()),
        Some("tmp<[a-z0-9_]{8}>.log".to_owned())
    );
}

#[test]
fn rotating_public_addresses_learn_their_network_and_nothing_wider() {
    let mut g = Generalisations::default();
    let mut merges = Vec::new();
    for a in ["52.216.8.17", "52.216.9.200", "52.216.8.99", "52.216.9.4"] {
        let key = format!("connect tcp {a}:443");
        g.index(Dimension::Network, &key);
        merges.extend(g.learn_network(&key));
    }
    let last = merges.last().expect("a network learned");
    assert_eq!(last.into, "connect tcp 52.216.8.0/23:443");
    let cover = |k: &str| g.cover(Dimension::Network, k, None);
    assert_eq!(
        cover("connect tcp 52.216.9.77:443").as_deref(),
        Some("connect tcp 52.216.8.0/23:443")
    );
    // Outside the network, another port, another protocol.
    assert_eq!(cover("connect tcp 52.216.10.1:443"), None);
    assert_eq!(cover("connect tcp 52.216.9.77:4444"), None);
    assert_eq!(cover("connect udp 52.216.9.77:443"), None);
}

#[test]
fn a_few_destinations_stay_exact_and_private_never_joins_public() {
    let mut g = Generalisations::default();
    for a in ["10.96.20.15", "10.96.20.16", "10.96.20.17"] {
        let key = format!("connect tcp {a}:5432");
        assert_eq!(g.learn_network(&key), None);
    }
    // A /8 apart: no network within the bound covers both.
    let mut g = Generalisations::default();
    for a in ["10.1.0.1", "11.1.0.1", "10.2.0.1", "11.2.0.1"] {
        assert_eq!(g.learn_network(&format!("connect tcp {a}:443")), None);
    }
}

#[test]
fn spread_over_a_whole_slash_16_is_the_widest_learned() {
    let mut g = Generalisations::default();
    let mut last = None;
    for a in ["10.244.1.5", "10.244.77.9", "10.244.200.3", "10.244.13.1"] {
        last = g.learn_network(&format!("connect tcp {a}:8080")).or(last);
    }
    assert_eq!(
        last.map(|m| m.into).as_deref(),
        Some("connect tcp 10.244.0.0/16:8080")
    );
    assert_eq!(
        g.learn_network("connect tcp 10.245.0.1:8080"),
        None,
        "a /15 is wider than the bound"
    );
}

#[test]
fn rotating_named_endpoints_learn_their_first_label_below_their_parent() {
    let mut rng = Rng(11);
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut g = Generalisations::default();
    let mut merges = Vec::new();
    for _ in 0..5 {
        let key = format!(
            "connect tcp d{}.cdn.example.net:443",
            rng.word(alphabet, 13)
        );
        g.index(Dimension::Network, &key);
        merges.extend(g.learn_network(&key));
    }
    let learned = merges.last().expect("a shape is learned");
    // Few names cannot rule out `-`, which host names may hold; `_` they hold only
    // in service labels (`_sip._tcp`), so a label's alphabet has it only when seen.
    assert_eq!(
        learned.into,
        "connect tcp d<[a-z0-9-]{13}>.cdn.example.net:443"
    );
    assert!(learned.from.len() >= MIN_NAMES, "{learned:?}");
    let next = format!(
        "connect tcp d{}.cdn.example.net:443",
        rng.word(alphabet, 13)
    );
    assert_eq!(
        g.cover(Dimension::Network, &next, None).as_deref(),
        Some("connect tcp d<[a-z0-9-]{13}>.cdn.example.net:443")
    );
    // Another parent, port, protocol or shape, or a deeper name, is not covered.
    for other in [
        "connect tcp d0a1b2c3d4e5f6.cdn.example.org:443",
        "connect tcp d0a1b2c3d4e5f6.cdn.example.net:8443",
        "connect udp d0a1b2c3d4e5f6.cdn.example.net:443",
        "connect tcp exfil.cdn.example.net:443",
        "connect tcp x.d0a1b2c3d4e5f6.cdn.example.net:443",
    ] {
        assert_eq!(g.cover(Dimension::Network, other, None), None, "{other}");
    }
    // The learned key alone teaches the shape (a state or baseline file).
    let rebuilt = Generalisations::rebuild([(Dimension::Network, learned.into.as_str())]);
    assert!(rebuilt.cover(Dimension::Network, &next, None).is_some());
}

#[test]
fn numbered_members_learn_a_digit_shape_and_a_registrable_domain_never_varies() {
    let mut g = Generalisations::default();
    let mut last = None;
    for i in 0..4 {
        last = g
            .learn_network(&format!(
                "connect tcp kafka-{i}.kafka.shop.svc.cluster.local:9092"
            ))
            .or(last);
    }
    assert_eq!(
        last.map(|m| m.into).as_deref(),
        Some("connect tcp kafka-<[0-9]+>.kafka.shop.svc.cluster.local:9092")
    );
    // Names right below a public suffix name their owner: never a shape.
    let mut rng = Rng(5);
    for suffix in ["com", "co.uk"] {
        for _ in 0..8 {
            let key = format!(
                "connect tcp {}.{suffix}:443",
                rng.word(b"abcdefghijklmnopqrstuvwxyz", 12)
            );
            assert_eq!(g.learn_network(&key), None, "{key}");
        }
    }
}

#[test]
fn named_destinations_learned_before_a_restart_are_kin_after_it() {
    let mut g = Generalisations::default();
    for key in [
        "connect tcp d3kq9zv2mx7tpa.cdn.example.net:443",
        "connect tcp dq7wn4hz0rb2ke.cdn.example.net:443",
    ] {
        g.index(Dimension::Network, key);
        assert_eq!(g.learn_network(key), None);
    }
    let samples = g.samples();
    let json = serde_json::to_string(&samples).unwrap();
    let mut restored = Generalisations::rebuild([]);
    restored.restore(serde_json::from_str(&json).unwrap());
    let kin = restored
        .kin_network("connect tcp d8m2xj5tq0wcnv.cdn.example.net:443")
        .expect("kin after the restart");
    assert_eq!(kin.anchors.len(), 2, "{kin:?}");
    assert_eq!(kin.key, None);
}

/// A random number written in base 36, as Ruby's `rand(0x100000000).to_s(36)`.
fn base36(mut n: u64) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap()
}

/// Names of segments that vary together: the writing process's id beside the random
/// part (Node's `tmp`: `tmp-<pid>-<12 random>`), and a date, a pid and a random number
/// of varying length (Ruby's `Dir.mktmpdir`: `d<yyyymmdd>-<pid>-<base 36>`).
#[test]
fn names_whose_pid_date_and_random_part_vary_learn_one_shape() {
    let mut rng = Rng(11);
    let alnum = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let node = |rng: &mut Rng| {
        format!(
            "/tmp/tmp-{}-{}",
            1 + rng.next() % 40_000,
            rng.word(alnum, 12)
        )
    };
    let mut g = Generalisations::default();
    let learned: Vec<String> = (0..8).map(|_| node(&mut rng)).collect();
    assert!(!learn(&mut g, &learned).is_empty(), "{learned:?}");
    for _ in 0..50 {
        let next = node(&mut rng);
        assert_eq!(
            g.path(&next),
            "/tmp/tmp-<[0-9]+>-<[A-Za-z0-9_]{12}>",
            "{next}"
        );
    }

    let ruby = |rng: &mut Rng, day: u32| {
        format!(
            "/tmp/d202612{day:02}-{}-{}/out.json",
            1 + rng.next() % 40_000,
            base36(rng.next() % 0x1_0000_0000)
        )
    };
    let mut g = Generalisations::default();
    let learned: Vec<String> = (0..8).map(|_| ruby(&mut rng, 7)).collect();
    assert!(!learn(&mut g, &learned).is_empty(), "{learned:?}");
    // The next days, and the random number shorter than any seen.
    for day in 7..12 {
        let next = ruby(&mut rng, day);
        assert_eq!(
            g.path(&next),
            "/tmp/<hex>-<[0-9]+>-<[a-z0-9_]{1,7}>/out.json",
            "{next}"
        );
    }
    assert!(g.path("/tmp/d20261209-77-k2z/out.json").contains("{1,7}"));
    // A name of another shape in that directory stays itself.
    assert_eq!(g.path("/tmp/d20261207-77-k2z.sh"), "/tmp/<hex>-<n>-k2z.sh");
    assert!(
        !g.path("/tmp/d20261207-payload-k2z1/out.json")
            .contains("<[")
    );
}

/// A segment of words (the unit a systemd private directory is for) is fixed where
/// the names differ in it; the shape is learned from the names of one of them.
#[test]
fn a_segment_of_words_is_fixed_and_only_its_names_make_the_shape() {
    let mut rng = Rng(12);
    let alnum = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut g = Generalisations::default();
    let mut paths = Vec::new();
    for unit in [
        "chronyd", "nginx", "redis", "chronyd", "chronyd", "postfix", "chronyd",
    ] {
        paths.push(format!(
            "/tmp/systemd-private-{}-{unit}.service-{}",
            rng.word(b"0123456789abcdef", 32),
            rng.word(alnum, 6)
        ));
    }
    learn(&mut g, &paths);
    let next = format!(
        "/tmp/systemd-private-{}-chronyd.service-{}",
        rng.word(b"0123456789abcdef", 32),
        rng.word(alnum, 6)
    );
    let general = g.path(&next);
    assert!(general.starts_with("/tmp/systemd-private-"), "{general}");
    assert!(general.contains("-chronyd.service-<["), "{general}");
    let other = g.path("/tmp/systemd-private-0123456789abcdef0123456789abcdef-sshd.service-Qz12Xy");
    assert!(!other.contains("<["), "{other}");
}

/// Words of several segments, and dated names folding already writes alike, learn no
/// shape.
#[test]
fn segments_someone_chose_learn_no_shape() {
    let mut g = Generalisations::default();
    let words: Vec<String> = [
        "report-alpha-final.csv",
        "report-delta-draft.csv",
        "report-gamma-final.csv",
        "report-sigma-review.csv",
        "report-omega-draft.csv",
    ]
    .iter()
    .map(|n| format!("/srv/out/{n}"))
    .collect();
    assert!(learn(&mut g, &words).is_empty());
    let users: Vec<String> = [
        "user-john-123.json",
        "user-mary-456.json",
        "user-peter-789.json",
        "user-susan-12.json",
        "user-olivia-7.json",
    ]
    .iter()
    .map(|n| format!("/srv/users/{n}"))
    .collect();
    assert!(learn(&mut g, &users).is_empty());
    let dated: Vec<String> = (1..9)
        .map(|d| format!("/var/log/app/app-2026-12-0{d}.log"))
        .collect();
    assert!(learn(&mut g, &dated).is_empty());
    assert!(!g.has_shapes());
}

#[test]
fn segmented_shapes_survive_as_baseline_keys() {
    let key = "write /tmp/<hex>-<[0-9]+>-<[a-z0-9_]{1,7}>/out.json";
    let g = Generalisations::rebuild([(Dimension::File, key)]);
    assert_eq!(
        g.path("/tmp/d20261207-4411-1x9kq2/out.json"),
        "/tmp/<hex>-<[0-9]+>-<[a-z0-9_]{1,7}>/out.json"
    );
    let shape = NameShape::parse("tmp-<n>-<[A-Za-z0-9_]{12}>").expect("a shape");
    assert_eq!(shape.render(), "tmp-<n>-<[A-Za-z0-9_]{12}>");
    assert!(shape.matches("tmp-1-AbCdEfGhIjK1"));
    assert!(!shape.matches("tmp-x1-AbCdEfGhIjK1"));
}

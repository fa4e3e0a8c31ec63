//! Chat command matching: one command matched against 10, 100 and 1,000 loaded aliases (two
//! formats each, in the shapes packs use: fixed words, parameters, an optional parameter with a
//! default, trailing `key=value` pairs), as the server and chat endpoints match them (an
//! `AliasIndex` built once per load). `hit`: the command matches one format; `miss`: it matches
//! none (the "did you mean" path); `hit-one-prefix`: every alias starts with the same word
//! (`ops tool<i> ...`). `one-shot` builds the index for each command, as
//! `squall alias match` does once per run.
//! Run: `cargo bench -p squall-rules --bench aliases`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use squall_rules::{match_command, Alias, AliasIndex};

fn alias(i: usize) -> Alias {
    let text = format!(
        "name: a{i}\naction_ref: pack{p}.action{i}\ndescription: Alias {i}.\nformats:\n  - \"tool{i} deploy {{{{ app }}}} to {{{{ env=staging }}}}\"\n  - display: \"tool{i} status <app>\"\n    representation:\n      - \"tool{i} status {{{{ app }}}}\"\n",
        p = i % 20
    );
    Alias::from_yaml(&text).expect("bench alias loads")
}

/// Every alias under one command word (`ops tool<i> ...`), as a team that prefixes all its
/// commands would write them.
fn prefixed(i: usize) -> Alias {
    let text = format!(
        "name: p{i}\naction_ref: ops.action{i}\nformats:\n  - \"ops tool{i} deploy {{{{ app }}}} to {{{{ env=staging }}}}\"\n  - \"ops tool{i} status {{{{ app }}}}\"\n"
    );
    Alias::from_yaml(&text).expect("bench alias loads")
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("alias_match");
    for n in [10usize, 100, 1_000] {
        let aliases: Vec<Alias> = (0..n).map(alias).collect();
        let index = AliasIndex::new(&aliases);
        let hit = format!("tool{} deploy web-frontend to production replicas=3", n / 2);
        let miss = "tool deploy web-frontend to production";
        assert!(index.match_command(&hit).is_ok(), "{hit}");
        assert!(index.match_command(miss).is_err());
        group.bench_with_input(BenchmarkId::new("hit", n), &hit, |b, cmd| {
            b.iter(|| index.match_command(cmd))
        });
        group.bench_with_input(BenchmarkId::new("miss", n), &miss, |b, cmd| {
            b.iter(|| index.match_command(cmd))
        });
        if n <= 100 {
            group.bench_with_input(BenchmarkId::new("one-shot", n), &hit, |b, cmd| {
                b.iter(|| match_command(&aliases, cmd))
            });
        }
    }
    let aliases: Vec<Alias> = (0..1_000).map(prefixed).collect();
    let index = AliasIndex::new(&aliases);
    let hit = "ops tool500 deploy web-frontend to production replicas=3".to_string();
    assert!(index.match_command(&hit).is_ok(), "{hit}");
    group.bench_with_input(BenchmarkId::new("hit-one-prefix", 1_000), &hit, |b, cmd| {
        b.iter(|| index.match_command(cmd))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

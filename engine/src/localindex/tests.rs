//! Unit tests of the local index.

use super::reader::LOOKUPS_BEFORE_FILTER;
use super::*;
use crate::backend::LocalBackend;
use crate::blob::PackedBlob;
use crate::compress::Compression;
use crate::envelope::seal_msgpack;
use crate::indexfile::IndexPack;

fn blob(i: u32) -> PackedBlob {
    PackedBlob {
        id: Id::random(),
        blob_type: BlobType::Data,
        offset: 24 + i * 100,
        length: 100,
        raw_length: 84,
        compression: Compression::None,
        start: None,
    }
}

/// Writes an index file of one pack with `n` blobs; returns its ID and content.
fn write_index(backend: &dyn Backend, key: &MasterKey, n: u32) -> (Id, IndexFile) {
    let f = IndexFile {
        packs: vec![IndexPack {
            id: Id::random(),
            size: 24 + u64::from(n) * 100 + 100,
            blobs: (0..n).map(blob).collect(),
        }],
        supersedes: Vec::new(),
    };
    let data = seal_msgpack(key, ObjectKind::Index, &f);
    let id = Id::of_object(&data);
    backend.write(FileKind::Index, &id.to_hex(), &data).unwrap();
    (id, f)
}

#[test]
fn sync_absorbs_more_index_files_than_one_batch_and_rebuilds_when_one_goes() {
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(dir.path().join("repo"));
    backend.create().unwrap();
    let key = MasterKey::generate();
    let batch = SYNC_FILES_PER_THREAD * rayon::current_num_threads().max(1);
    let files: Vec<(Id, IndexFile)> = (0..2 * batch + 1)
        .map(|i| write_index(&backend, &key, 1 + i as u32))
        .collect();
    let total: usize = files.iter().map(|(_, f)| f.packs[0].blobs.len()).sum();

    let idx = LocalIndex::open(&dir.path().join("cache/index.redb")).unwrap();
    let s = idx.sync(&backend, &key).unwrap();
    assert!(!s.rebuilt);
    assert_eq!(s.files_loaded, files.len());
    assert_eq!(s.blobs, total);
    assert_eq!(idx.blob_count().unwrap(), total as u64);
    let r = idx.reader().unwrap();
    for (_, f) in &files {
        for b in &f.packs[0].blobs {
            let loc = r.lookup(&b.id).unwrap().expect("indexed");
            assert_eq!(loc.pack, f.packs[0].id);
            assert_eq!(loc.blob, *b);
        }
    }
    assert!(!r.contains(&Id::random()).unwrap());
    drop(r);

    // Nothing new: nothing loaded.
    let s = idx.sync(&backend, &key).unwrap();
    assert_eq!((s.rebuilt, s.files_loaded), (false, 0));

    // An absorbed index file is gone (as after prune): rebuilt without it.
    let (gone, f) = &files[batch];
    backend.delete(FileKind::Index, &gone.to_hex()).unwrap();
    let s = idx.sync(&backend, &key).unwrap();
    assert!(s.rebuilt);
    assert_eq!(s.files_loaded, files.len() - 1);
    let left = total - f.packs[0].blobs.len();
    assert_eq!(idx.blob_count().unwrap(), left as u64);
    assert!(!idx.contains(&f.packs[0].blobs[0].id).unwrap());
    assert!(idx.contains(&files[0].1.packs[0].blobs[0].id).unwrap());
}

#[test]
fn a_blob_listed_twice_in_one_index_file_is_found_in_the_later_pack() {
    // Rows are inserted sorted by ID; the sort must keep pack order for
    // equal IDs, as inserting in pack order did.
    let idx = LocalIndex::in_memory().unwrap();
    let twice = blob(3);
    let packs: Vec<IndexPack> = (0..3)
        .map(|i| {
            let mut blobs: Vec<PackedBlob> = (0..20).map(blob).collect();
            blobs[7 + i] = PackedBlob {
                offset: 1000 + i as u32,
                ..twice
            };
            IndexPack {
                id: Id::random(),
                size: 10_000,
                blobs,
            }
        })
        .collect();
    let last = packs[2].id;
    let f = IndexFile {
        packs,
        supersedes: Vec::new(),
    };
    idx.add_index_file(&Id::random(), &f).unwrap();
    let loc = idx.lookup(&twice.id).unwrap().unwrap();
    assert_eq!((loc.pack, loc.blob.offset), (last, 1002));
    assert_eq!(idx.blob_count().unwrap(), 3 * 19 + 1);
}

/// Trees are found through their own small table, agree with `blobs`
/// (the later of two copies wins in both) and leave with a clear; a
/// tree stored as data (same bytes) is still found.
#[test]
fn trees_are_found_in_their_own_table_and_cleared_with_the_rest() {
    let idx = LocalIndex::in_memory().unwrap();
    let tree = |i| PackedBlob {
        blob_type: BlobType::Tree,
        ..blob(i)
    };
    let (t, d) = (tree(0), blob(1));
    let mut again = tree(2);
    again.id = t.id;
    let f = IndexFile {
        packs: vec![
            IndexPack {
                id: Id::random(),
                size: 1000,
                blobs: vec![t, d],
            },
            IndexPack {
                id: Id::random(),
                size: 1000,
                blobs: vec![again],
            },
        ],
        supersedes: Vec::new(),
    };
    idx.add_index_file(&Id::random(), &f).unwrap();
    let r = idx.reader().unwrap();
    assert_eq!(r.trees.len().unwrap(), 1);
    let loc = r.lookup_tree(&t.id).unwrap().unwrap();
    assert_eq!(loc, r.lookup(&t.id).unwrap().unwrap());
    assert_eq!((loc.pack, loc.blob.offset), (f.packs[1].id, again.offset));
    assert_eq!(r.lookup_tree(&d.id).unwrap().unwrap().blob, d);
    assert!(r.lookup_tree(&Id::random()).unwrap().is_none());
    drop(r);
    idx.clear().unwrap();
    assert!(idx.lookup_tree(&t.id).unwrap().is_none());
    assert_eq!(idx.reader().unwrap().trees.len().unwrap(), 0);
}

#[test]
fn a_verified_snapshot_is_forgotten_when_the_index_is_cleared() {
    let idx = LocalIndex::in_memory().unwrap();
    let (s1, s2) = (Id::random(), Id::random());
    let v = idx.backup_view(Some(&s1)).unwrap();
    assert!(!v.parent_verified);
    assert!(idx.mark_verified(&s1, v.clears).unwrap());
    assert!(idx.backup_view(Some(&s1)).unwrap().parent_verified);
    assert!(!idx.backup_view(Some(&s2)).unwrap().parent_verified);
    assert!(!idx.backup_view(None).unwrap().parent_verified);

    // A clear (sync after an index file vanished, prune, repair) drops
    // the record, and a backup that started before it cannot record.
    let before = idx.backup_view(Some(&s1)).unwrap();
    idx.clear().unwrap();
    let after = idx.backup_view(Some(&s1)).unwrap();
    assert!(!after.parent_verified);
    assert_eq!(after.clears, before.clears + 1);
    assert!(!idx.mark_verified(&s2, before.clears).unwrap());
    assert!(!idx.backup_view(Some(&s2)).unwrap().parent_verified);
    assert!(idx.mark_verified(&s2, after.clears).unwrap());
    assert!(idx.backup_view(Some(&s2)).unwrap().parent_verified);
}

#[test]
fn only_the_newest_verified_snapshots_are_kept() {
    let idx = LocalIndex::in_memory().unwrap();
    let ids: Vec<Id> = (0..VERIFIED_KEEP + 3).map(|_| Id::random()).collect();
    for id in &ids {
        assert!(idx.mark_verified(id, 0).unwrap());
    }
    let verified = |id: &Id| idx.backup_view(Some(id)).unwrap().parent_verified;
    assert!(ids[..3].iter().all(|id| !verified(id)));
    assert!(ids[3..].iter().all(verified));
}

fn file_of(blobs: Vec<PackedBlob>) -> IndexFile {
    IndexFile {
        packs: vec![IndexPack {
            id: Id::random(),
            size: 1 << 30,
            blobs,
        }],
        supersedes: Vec::new(),
    }
}

fn table_len(idx: &LocalIndex, t: TableDefinition<[u8; 32], BlobRow>) -> u64 {
    let tx = idx.handle().unwrap().db.begin_read().unwrap();
    tx.open_table(t).unwrap().len().unwrap()
}

/// Rows move from `recent_blobs` to `blobs` in bulk; a blob is found,
/// once and at its latest location, wherever its row is.
#[test]
fn new_rows_are_merged_in_bulk_and_every_blob_stays_found() {
    let mut idx = LocalIndex::in_memory().unwrap();
    idx.merge_min_rows = 100;
    // Each file of 60 goes on from `fresh_blobs` at once (tested below).
    idx.fresh_min_rows = 1;
    let files: Vec<IndexFile> = (0..5)
        .map(|_| file_of((0..60).map(blob).collect()))
        .collect();
    let mut merged_after = Vec::new();
    for (i, f) in files.iter().enumerate() {
        idx.add_index_file(&Id::random(), f).unwrap();
        let (old, new) = (table_len(&idx, BLOBS), table_len(&idx, RECENT));
        assert_eq!(old + new, 60 * (i as u64 + 1));
        if new == 0 {
            merged_after.push(i);
        }
        for g in &files[..=i] {
            for b in &g.packs[0].blobs {
                assert!(idx.contains(&b.id).unwrap());
                assert_eq!(idx.lookup(&b.id).unwrap().unwrap().pack, g.packs[0].id);
            }
        }
    }
    // 120 rows >= 100: merged; then 60 more do not reach 100 until 240.
    assert_eq!(merged_after, vec![1, 3]);

    // A merged blob absorbed again (repacked): the later row wins, and
    // the blob is listed once.
    let again = PackedBlob {
        offset: 7,
        ..files[0].packs[0].blobs[5]
    };
    let f = file_of(vec![again]);
    idx.add_index_file(&Id::random(), &f).unwrap();
    let loc = idx.lookup(&again.id).unwrap().unwrap();
    assert_eq!((loc.pack, loc.blob.offset), (f.packs[0].id, 7));
    let mut seen = Vec::new();
    idx.for_each_blob(|l| {
        seen.push((l.blob.id, l.pack));
        Ok(())
    })
    .unwrap();
    assert_eq!(seen.len(), 300);
    assert!(
        seen.windows(2).all(|w| w[0].0.0 < w[1].0.0),
        "once each, in ID order"
    );
    assert!(seen.contains(&(again.id, f.packs[0].id)));
    assert_eq!(idx.blob_count().unwrap(), 301, "rows, as documented");
}

/// New rows go to `fresh_blobs`, which moves to `recent_blobs` in bulk
/// (and that to `blobs`); a blob with rows in all three is found at its
/// latest location and listed once.
#[test]
fn fresh_rows_move_down_in_bulk_and_the_newest_row_wins() {
    let mut idx = LocalIndex::in_memory().unwrap();
    idx.fresh_min_rows = 100;
    idx.merge_min_rows = 250;
    let lens = |idx: &LocalIndex| [FRESH, RECENT, BLOBS].map(|t| table_len(idx, t));
    let files: Vec<IndexFile> = (0..6)
        .map(|_| file_of((0..60).map(blob).collect()))
        .collect();
    let mut after = Vec::new();
    for f in &files {
        idx.add_index_file(&Id::random(), f).unwrap();
        after.push(lens(&idx));
    }
    assert_eq!(
        after,
        vec![
            [60, 0, 0],
            [0, 120, 0], // 120 fresh rows >= 100: moved down
            [60, 120, 0],
            [0, 240, 0], // 240 recent rows < 250: they stay
            [60, 240, 0],
            [0, 0, 360], // both moved down
        ]
    );
    assert!(idx.reader().unwrap().filter.key.blocks > 0);

    // One blob with a row in each table: the last absorbed wins.
    let moved = |offset: u32, others: u32| {
        let mut blobs = vec![PackedBlob {
            offset,
            ..files[0].packs[0].blobs[5]
        }];
        blobs.extend((0..others).map(blob));
        let f = file_of(blobs);
        idx.add_index_file(&Id::random(), &f).unwrap();
        f
    };
    let second = moved(7, 99);
    assert_eq!(lens(&idx), [0, 100, 360]);
    let id = second.packs[0].blobs[0].id;
    let loc = idx.lookup(&id).unwrap().unwrap();
    assert_eq!(
        (loc.pack, loc.blob.offset),
        (second.packs[0].id, 7),
        "recent over blobs"
    );
    let last = moved(9, 0);
    assert_eq!(lens(&idx), [1, 100, 360]);
    let loc = idx.lookup(&id).unwrap().unwrap();
    assert_eq!((loc.pack, loc.blob.offset), (last.packs[0].id, 9));
    assert!(idx.contains(&id).unwrap());
    let mut seen = Vec::new();
    idx.for_each_blob(|l| {
        seen.push((l.blob.id, l.pack, l.blob.offset));
        Ok(())
    })
    .unwrap();
    assert_eq!(seen.len(), 360 + 99);
    assert!(
        seen.windows(2).all(|w| w[0].0.0 < w[1].0.0),
        "once each, in order"
    );
    assert!(seen.contains(&(id, last.packs[0].id, 9)));
    assert_eq!(idx.blob_count().unwrap(), 361 + 100, "rows, as documented");
    for f in &files {
        for b in &f.packs[0].blobs {
            assert!(idx.contains(&b.id).unwrap());
        }
    }
}

/// The filter rules most absent IDs out, never a present one: as
/// written, after it grew, reloaded by another instance, when this
/// process's copy is of another generation, and when its pages are
/// damaged (then it rules nothing out until it is rebuilt).
#[test]
fn the_filter_never_hides_a_blob_and_rules_most_absent_ones_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    let absent: Vec<Id> = (0..20_000).map(|_| Id::random()).collect();
    let maybe = |r: &IndexReader| {
        absent
            .iter()
            .filter(|id| r.filter.may_contain(id).unwrap())
            .count()
    };
    let all_found = |idx: &LocalIndex, files: &[IndexFile]| {
        let r = idx.reader().unwrap();
        files
            .iter()
            .flat_map(|f| &f.packs[0].blobs)
            .all(|b| r.contains(&b.id).unwrap())
    };
    let mut files = Vec::new();
    let idx = LocalIndex::open(&path).unwrap();
    let first_size;
    {
        // Three files of 40,000: the third outgrows the smallest filter.
        for _ in 0..3 {
            files.push(file_of((0..40_000).map(blob).collect()));
            idx.add_index_file(&Id::random(), files.last().unwrap())
                .unwrap();
            assert!(all_found(&idx, &files));
        }
        let r = idx.reader().unwrap();
        first_size = r.filter.key.blocks;
        assert!(first_size > 768, "rebuilt bigger: {first_size} blocks");
        let m = maybe(&r);
        // About 7 %, and the first lookups of a view not yet holding it.
        let most = 2_000 + LOOKUPS_BEFORE_FILTER as usize;
        assert!(m < most, "{m} of 20000 absent IDs answered maybe");
        assert!(absent.iter().all(|id| !r.contains(id).unwrap()));
    }
    drop(idx);

    // Another instance loads it from its pages.
    let idx = LocalIndex::open(&path).unwrap();
    assert!(!idx.recreated);
    assert!(idx.handle().unwrap().filter.lock().unwrap().is_none());
    let r = idx.reader().unwrap();
    assert!(absent[..10].iter().all(|id| !r.contains(id).unwrap()));
    assert!(
        idx.handle().unwrap().filter.lock().unwrap().is_none(),
        "a few lookups do not load it"
    );
    drop(r);
    // A small file changes the stored pages it falls in, without loading
    // the filter.
    files.push(file_of((0..10).map(blob).collect()));
    idx.add_index_file(&Id::random(), files.last().unwrap())
        .unwrap();
    assert!(
        idx.handle().unwrap().filter.lock().unwrap().is_none(),
        "not loaded"
    );
    let (stored, complete) = idx.reader().unwrap().filter.load().unwrap().unwrap();
    assert!(complete);
    let ids = || files.iter().flat_map(|f| &f.packs[0].blobs);
    assert!(ids().all(|b| stored.may_contain(&b.id.0)));
    drop(stored);
    *idx.handle().unwrap().filter.lock().unwrap() = None;
    assert!(all_found(&idx, &files));
    assert!(maybe(&idx.reader().unwrap()) < 2_000 + LOOKUPS_BEFORE_FILTER as usize);

    // A copy in memory of an older generation (another process wrote
    // since), or of a newer one after a clear, is not trusted. (An empty
    // filter stands for the copy, so using it shows: blobs go missing.)
    let FilterKey {
        generation: g,
        clears: c,
        ..
    } = idx.reader().unwrap().filter.key;
    let copy = |generation, clears| {
        *idx.handle().unwrap().filter.lock().unwrap() = Some(Cached {
            generation,
            clears,
            filter: Arc::new(filter::Filter::zeroed(first_size)),
            complete: true,
        })
    };
    copy(g - 1, c);
    assert!(all_found(&idx, &files));
    copy(g + 1, c + 1);
    assert!(all_found(&idx, &files));
    // Of this generation, or a later one without a clear in between, it
    // is trusted: it has every row of the view.
    copy(g, c);
    assert!(!all_found(&idx, &files));
    copy(g + 1, c);
    assert!(!all_found(&idx, &files));

    // Damaged pages: nothing is ruled out, everything is still found,
    // and the next absorbed file rebuilds the filter.
    {
        // Every page, so the next file meets one whichever it touches.
        let tx = idx.handle().unwrap().db.begin_write().unwrap();
        let mut pages = tx.open_table(filter::FILTER).unwrap();
        for p in 0..filter::pages_for(first_size + 1) {
            pages.insert(p, &[1u8, 2, 3][..]).unwrap();
        }
        drop(pages);
        tx.commit().unwrap();
    }
    *idx.handle().unwrap().filter.lock().unwrap() = None;
    assert_eq!(maybe(&idx.reader().unwrap()), absent.len());
    assert!(all_found(&idx, &files));
    files.push(file_of((0..10).map(blob).collect()));
    idx.add_index_file(&Id::random(), files.last().unwrap())
        .unwrap();
    assert!(all_found(&idx, &files));
    assert!(maybe(&idx.reader().unwrap()) < 2_000);

    // A clear drops it with the rows.
    idx.clear().unwrap();
    let r = idx.reader().unwrap();
    assert_eq!(r.filter.key.blocks, 0);
    assert!(!r.contains(&files[0].packs[0].blobs[0].id).unwrap());
}

/// A merge has just read `blobs`: the filter is rebuilt then, big enough
/// to last until the next merge, not in between (cold).
#[test]
fn a_merge_sizes_the_filter_to_last_until_the_next_one() {
    let mut idx = LocalIndex::in_memory().unwrap();
    idx.merge_min_rows = 50_000;
    idx.fresh_min_rows = 1;
    let blocks = |idx: &LocalIndex| idx.reader().unwrap().filter.key.blocks;
    let mut files = Vec::new();
    let mut add = |idx: &LocalIndex| {
        files.push(file_of((0..30_000).map(blob).collect()));
        idx.add_index_file(&Id::random(), files.last().unwrap())
            .unwrap();
    };
    add(&idx);
    assert_eq!(blocks(&idx), filter::Filter::for_rows(0).blocks());
    add(&idx); // 60,000 rows in `recent_blobs`: merged
    assert_eq!(table_len(&idx, RECENT), 0);
    // Sized for the next merge's rows and the fresh rows before it.
    let after_merge = filter::Filter::for_rows(60_000 + 50_000 + 60_000 / 64).blocks();
    assert_eq!(blocks(&idx), after_merge);
    add(&idx);
    add(&idx); // merged again, and 170,000 rows are more than it holds
    assert_eq!(table_len(&idx, RECENT), 0);
    assert_eq!(
        blocks(&idx),
        filter::Filter::for_rows(120_000 + 50_000 + 120_000 / 64).blocks()
    );
    let r = idx.reader().unwrap();
    assert!(
        files
            .iter()
            .flat_map(|f| &f.packs[0].blobs)
            .all(|b| r.contains(&b.id).unwrap())
    );
}

#[test]
fn a_reopened_index_keeps_its_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    let f = IndexFile {
        packs: vec![IndexPack {
            id: Id::random(),
            size: 10_000,
            blobs: (0..50).map(blob).collect(),
        }],
        supersedes: Vec::new(),
    };
    {
        let idx = LocalIndex::open(&path).unwrap();
        assert_eq!(idx.blob_count().unwrap(), 0);
        idx.add_index_file(&Id::random(), &f).unwrap();
    }
    let idx = LocalIndex::open(&path).unwrap();
    assert!(!idx.recreated);
    assert_eq!(idx.blob_count().unwrap(), 50);
    for b in &f.packs[0].blobs {
        assert_eq!(idx.lookup(&b.id).unwrap().unwrap().blob, *b);
    }
}

/// Another process's write lock on the database (as one stopped inside a
/// write would hold it): a second handle in this process, whose locks are
/// its own open file's.
fn held_elsewhere(path: &Path) -> (Database, redb::WriteTransaction) {
    let other = redb::Builder::new()
        .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
        .create(path)
        .unwrap();
    let tx = other.begin_write().unwrap();
    (other, tx)
}

#[test]
fn a_write_lock_held_elsewhere_is_waited_for_a_while_then_reported() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.redb");
    let f = |n| IndexFile {
        packs: vec![IndexPack {
            id: Id::random(),
            size: 10_000,
            blobs: (0..n).map(blob).collect(),
        }],
        supersedes: Vec::new(),
    };
    let wait = Duration::from_millis(300);
    let idx = LocalIndex::open_waiting(&path, wait).unwrap();
    idx.add_index_file(&Id::random(), &f(5)).unwrap();
    let (other, tx) = held_elsewhere(&path);

    // Opening waits for the lock (redb takes it to open), then gives up.
    let start = Instant::now();
    let e = LocalIndex::open_waiting(&path, wait)
        .err()
        .expect("gave up");
    assert!(start.elapsed() >= wait);
    assert!(e.is_cache_io(), "{e}");
    assert!(e.to_string().contains("held its write lock"), "{e}");
    // So does a write of a handle already open, and its later writes fail
    // without waiting; reads go on.
    let start = Instant::now();
    let e = idx.add_index_file(&Id::random(), &f(3)).unwrap_err();
    assert!(start.elapsed() >= wait);
    assert!(e.is_cache_io(), "{e}");
    let start = Instant::now();
    let e = idx.settle_filter().err();
    assert!(e.is_none(), "nothing pending, nothing to write: {e:?}");
    assert!(idx.cache_tidied().unwrap_err().is_cache_io());
    assert!(start.elapsed() < wait);
    assert_eq!(idx.blob_count().unwrap(), 5);

    // A lock released within the wait is taken (the open that gave up
    // above may still be taking it in its thread, then closing: hence a
    // long wait here).
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        drop(tx);
        other
    });
    let again = LocalIndex::open_waiting(&path, Duration::from_secs(30)).unwrap();
    assert!(!again.recreated);
    drop(release.join().unwrap());
    again.add_index_file(&Id::random(), &f(2)).unwrap();
    // What gave up wrote nothing.
    assert_eq!(again.blob_count().unwrap(), 7);
    assert_eq!(idx.blob_count().unwrap(), 7);
}

#[test]
fn a_group_member_without_start_is_read_back_without_one() {
    let idx = LocalIndex::in_memory().unwrap();
    let member = |start| PackedBlob {
        compression: Compression::ZstdGroup,
        start,
        ..blob(0)
    };
    let (with, without) = (member(Some(0)), member(None));
    let f = IndexFile {
        packs: vec![IndexPack {
            id: Id::random(),
            size: 10_000,
            blobs: vec![with, without],
        }],
        supersedes: Vec::new(),
    };
    idx.add_index_file(&Id::random(), &f).unwrap();
    // Start 0 and no start stay apart, so readers refuse the second.
    assert_eq!(idx.lookup(&with.id).unwrap().unwrap().blob.start, Some(0));
    assert_eq!(idx.lookup(&without.id).unwrap().unwrap().blob.start, None);
}

/// Absorbs that defer the filter leave its stored pages as they were and
/// mark them pending: a reader that loads them (another process) still
/// finds every blob, by asking `fresh_blobs`, and rules absent IDs out;
/// settling writes the pages once and clears the mark; a merge out of
/// `fresh_blobs` stores the pages too.
#[test]
fn deferred_absorbs_store_the_filter_once_and_no_reader_misses_a_blob() {
    let mut idx = LocalIndex::in_memory().unwrap();
    idx.fresh_min_rows = 30_000;
    let (stored_pages, pending) = (stored_filter_pages, filter_pending);
    let first = file_of((0..20_000).map(blob).collect());
    absorb_deferred(&idx, &Id::random(), &first);
    assert!(!pending(&idx), "no filter yet: it is built and stored");
    let before = stored_pages(&idx);
    assert!(!before.is_empty());

    let later: Vec<IndexFile> = (0..2)
        .map(|_| file_of((0..4_000).map(blob).collect()))
        .collect();
    for f in &later {
        absorb_deferred(&idx, &Id::random(), f);
    }
    assert_eq!(stored_pages(&idx), before, "no page written");
    assert!(pending(&idx));
    let ids = || later.iter().flat_map(|f| &f.packs[0].blobs).map(|b| b.id);
    let absent: Vec<Id> = (0..5_000).map(|_| Id::random()).collect();
    // This process's copy has their bits.
    let r = idx.reader().unwrap();
    assert!(ids().all(|id| r.filter.may_contain(&id).unwrap()));
    assert!(r.filter.certain());
    drop(r);
    // A reader with only the stored pages asks `fresh_blobs`.
    *idx.handle().unwrap().filter.lock().unwrap() = None;
    let r = idx.reader().unwrap();
    assert!(ids().all(|id| r.contains(&id).unwrap()));
    assert!(!r.filter.certain());
    assert!(
        ids().any(|id| !r.filter.may_contain(&id).unwrap()),
        "pages lack bits"
    );
    assert!(absent.iter().all(|id| !r.contains(id).unwrap()));
    let ruled_out = absent
        .iter()
        .filter(|id| !r.filter.may_contain(id).unwrap())
        .count();
    assert!(
        ruled_out > 4_000,
        "{ruled_out} of 5,000 absent IDs ruled out"
    );
    drop(r);

    // A deferred absorb keeps the mark and this process's copy of the
    // pages (loaded by the reader above), which lacks bits; settling
    // stores every fresh row's bits, once.
    let more = file_of((0..1_000).map(blob).collect());
    absorb_deferred(&idx, &Id::random(), &more);
    assert!(pending(&idx));
    assert_eq!(copy_complete(&idx), Some(false));
    assert_eq!(stored_pages(&idx), before);
    idx.settle_filter().unwrap();
    assert!(!pending(&idx));
    assert_ne!(stored_pages(&idx), before);
    *idx.handle().unwrap().filter.lock().unwrap() = None;
    let r = idx.reader().unwrap();
    let all = || ids().chain(more.packs[0].blobs.iter().map(|b| b.id));
    assert!(all().all(|id| r.filter.may_contain(&id).unwrap()));
    assert!(r.filter.certain());
    drop(r);
    let (settled, generation) = (stored_pages(&idx), filter_generation(&idx));
    idx.settle_filter().unwrap();
    assert_eq!(
        (stored_pages(&idx), filter_generation(&idx)),
        (settled, generation),
        "nothing to do"
    );

    // Rows leaving `fresh_blobs` (29,000 + 4,000 >= 30,000) take their
    // bits along: the merge stores the pages, deferred or not.
    let last = file_of((0..4_000).map(blob).collect());
    absorb_deferred(&idx, &Id::random(), &last);
    assert_eq!(table_len(&idx, FRESH), 0);
    assert!(!pending(&idx));
    *idx.handle().unwrap().filter.lock().unwrap() = None;
    let r = idx.reader().unwrap();
    assert!(
        last.packs[0]
            .blobs
            .iter()
            .chain(&first.packs[0].blobs)
            .all(|b| r.filter.may_contain(&b.id).unwrap() && r.contains(&b.id).unwrap())
    );
}

fn stored_filter_pages(idx: &LocalIndex) -> Vec<Vec<u8>> {
    let tx = idx.handle().unwrap().db.begin_read().unwrap();
    let pages = tx.open_table(filter::FILTER).unwrap();
    pages
        .iter()
        .unwrap()
        .map(|r| r.unwrap().1.value().to_vec())
        .collect()
}

fn filter_pending(idx: &LocalIndex) -> bool {
    let tx = idx.handle().unwrap().db.begin_read().unwrap();
    let meta = tx.open_table(META).unwrap();
    meta.get(FILTER_FRESH).unwrap().is_some()
}

/// Whether this process's copy of the filter is complete; `None`: no copy.
fn copy_complete(idx: &LocalIndex) -> Option<bool> {
    idx.handle()
        .unwrap()
        .filter
        .lock()
        .unwrap()
        .as_ref()
        .map(|c| c.complete)
}

fn filter_generation(idx: &LocalIndex) -> u64 {
    let tx = idx.handle().unwrap().db.begin_read().unwrap();
    meta_u64(&tx.open_table(META).unwrap(), FILTER_GEN).unwrap()
}

/// The usual case: this process's complete copy has the deferred rows'
/// bits, and settling writes every page from it. And when rows leave
/// `fresh_blobs` while their bits are pending and no copy is in memory
/// (another process deferred them), the merge sets them in the pages.
#[test]
fn a_complete_copy_settles_every_page_and_a_merge_while_pending_keeps_every_bit() {
    let mut idx = LocalIndex::in_memory().unwrap();
    idx.fresh_min_rows = 30_000;
    let first = file_of((0..20_000).map(blob).collect());
    idx.add_index_file(&Id::random(), &first).unwrap();
    let later: Vec<IndexFile> = (0..2)
        .map(|_| file_of((0..4_000).map(blob).collect()))
        .collect();
    for f in &later {
        absorb_deferred(&idx, &Id::random(), f);
    }
    assert!(filter_pending(&idx));
    assert_eq!(copy_complete(&idx), Some(true));
    idx.settle_filter().unwrap();
    assert!(!filter_pending(&idx));
    let ids = |files: &[&IndexFile]| -> Vec<Id> {
        files
            .iter()
            .flat_map(|f| &f.packs[0].blobs)
            .map(|b| b.id)
            .collect()
    };
    *idx.handle().unwrap().filter.lock().unwrap() = None;
    let r = idx.reader().unwrap();
    assert!(
        ids(&[&later[0], &later[1]])
            .iter()
            .all(|id| r.filter.may_contain(id).unwrap())
    );
    assert!(r.filter.certain());
    drop(r);

    *idx.handle().unwrap().filter.lock().unwrap() = None;
    let more = file_of((0..1_000).map(blob).collect());
    absorb_deferred(&idx, &Id::random(), &more);
    assert!(filter_pending(&idx));
    assert_eq!(copy_complete(&idx), None);
    // 29,000 + 4,000 fresh rows >= 30,000: merged into `recent_blobs`.
    let last = file_of((0..4_000).map(blob).collect());
    absorb_deferred(&idx, &Id::random(), &last);
    assert_eq!(table_len(&idx, FRESH), 0);
    assert!(!filter_pending(&idx));
    *idx.handle().unwrap().filter.lock().unwrap() = None;
    let r = idx.reader().unwrap();
    let all = ids(&[&first, &later[0], &later[1], &more, &last]);
    assert!(all.iter().all(|id| r.filter.may_contain(id).unwrap()));
    assert!(all.iter().all(|id| r.contains(id).unwrap()));
    assert!(r.filter.certain());
}

/// Warming reads the leaves of `fresh_blobs` and `recent_blobs` into the
/// page cache, not those of `blobs`, and leaves `recent_blobs` out when it
/// holds more than it is told.
#[test]
fn warming_caches_the_newer_tables_and_not_blobs() {
    use super::advice::tests::{PAGE, cached, on_disk, uncache};
    let dir = on_disk();
    let path = dir.path().join("index.redb");
    let mut idx = LocalIndex::open(&path).unwrap();
    let rows = |n: u32| file_of((0..n).map(blob).collect());
    // 150,000 rows down to `blobs`, 20,000 in `recent_blobs`, 10,000 fresh.
    (idx.fresh_min_rows, idx.merge_min_rows) = (1, 1);
    idx.add_index_file(&Id::random(), &rows(150_000)).unwrap();
    idx.merge_min_rows = u64::MAX;
    idx.add_index_file(&Id::random(), &rows(20_000)).unwrap();
    idx.fresh_min_rows = u64::MAX;
    idx.add_index_file(&Id::random(), &rows(10_000)).unwrap();
    let lens = [BLOBS, RECENT, FRESH].map(|t| table_len(&idx, t));
    assert_eq!(lens, [150_000, 20_000, 10_000]);
    // As in a command: the writer's handle stays open beside the warming one.

    let file = std::fs::File::open(&path).unwrap();
    let pages = file.metadata().unwrap().len().div_ceil(PAGE);
    let warmed = |recent_max| {
        uncache(&file);
        assert!(
            cached(&file, pages).iter().filter(|c| **c).count() < 8,
            "the file stays cached: it needs a disk, not a tmpfs"
        );
        warm_tables(&path, recent_max).expect("warmed");
        cached(&file, pages).iter().filter(|c| **c).count() as u64
    };
    // A 4 KiB leaf holds at most 4096 / (32-byte key + 22-byte row) rows.
    let leaves = |rows: u64| rows * 54 / PAGE;
    let fresh_only = warmed(0);
    let both = warmed(u64::MAX);
    assert!(fresh_only >= leaves(10_000), "{fresh_only}");
    assert!(both >= fresh_only + leaves(20_000), "{both} {fresh_only}");
    // Fewer pages than `blobs` alone would take.
    assert!(both < leaves(150_000), "{both}");
    idx.add_index_file(&Id::random(), &rows(10)).unwrap();
    assert_eq!(table_len(&idx, FRESH), 10_010);
}

/// A local backend that runs `hook` once, as another process would act
/// while this one lists index files (after the listing is taken) or reads
/// index file `on_read`.
struct Meanwhile<'a> {
    inner: &'a LocalBackend,
    on_read: Option<Id>,
    hook: std::sync::Mutex<Option<Box<dyn FnOnce() + Send + 'a>>>,
}

impl Meanwhile<'_> {
    fn run_hook(&self) {
        let hook = self.hook.lock().unwrap().take();
        if let Some(h) = hook {
            h();
        }
    }
}

impl Backend for Meanwhile<'_> {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    fn list(&self, kind: FileKind) -> Result<Vec<crate::backend::Listed>> {
        let listed = self.inner.list(kind)?;
        if self.on_read.is_none() {
            self.run_hook();
        }
        Ok(listed)
    }
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let data = self.inner.read(kind, name)?;
        if self.on_read.is_some_and(|id| id.to_hex() == name) {
            self.run_hook();
        }
        Ok(data)
    }
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.inner.read_range(kind, name, offset, len)
    }
    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        self.inner.write(kind, name, data)
    }
    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        self.inner.delete(kind, name)
    }
    fn stored_size(&self, kind: FileKind, name: &str) -> Result<Option<u64>> {
        self.inner.stored_size(kind, name)
    }
}

/// [`LocalIndex::add_index_file_deferred`] of a file written now (no clear
/// since), as a backup's saver absorbs its own.
fn absorb_deferred(idx: &LocalIndex, id: &Id, f: &IndexFile) {
    let clears = idx.clear_count().unwrap();
    assert!(idx.add_index_file_deferred(id, f, clears).unwrap());
}

/// Writes `f` as an index file; returns its ID.
fn write_file(backend: &dyn Backend, key: &MasterKey, f: &IndexFile) -> Id {
    let data = seal_msgpack(key, ObjectKind::Index, f);
    let id = Id::of_object(&data);
    backend.write(FileKind::Index, &id.to_hex(), &data).unwrap();
    id
}

/// A prune elsewhere: `old`'s pack is repacked into a new one holding its
/// first blob only, written as an index file superseding `old`, which is
/// deleted. Returns the new file.
fn prune_elsewhere(backend: &dyn Backend, key: &MasterKey, old: (Id, &IndexFile)) -> IndexFile {
    let mut kept = old.1.packs[0].blobs[0];
    kept.offset = 24;
    let new = IndexFile {
        packs: vec![IndexPack {
            id: Id::random(),
            size: 24 + 100 + 100,
            blobs: vec![kept],
        }],
        supersedes: vec![old.0],
    };
    write_file(backend, key, &new);
    backend.delete(FileKind::Index, &old.0.to_hex()).unwrap();
    new
}

#[test]
fn a_file_absorbed_elsewhere_while_the_index_is_listed_is_not_taken_for_one_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(dir.path().join("repo"));
    backend.create().unwrap();
    let key = MasterKey::generate();
    write_index(&backend, &key, 3);
    let idx = LocalIndex::open(&dir.path().join("cache/index.redb")).unwrap();
    idx.sync(&backend, &key).unwrap();
    // A backup sharing the cache writes and absorbs its index file once
    // the listing is taken.
    let backup_file = std::sync::Mutex::new(None);
    let meanwhile = Meanwhile {
        inner: &backend,
        on_read: None,
        hook: std::sync::Mutex::new(Some(Box::new(|| {
            let (id, f) = write_index(&backend, &key, 2);
            absorb_deferred(&idx, &id, &f);
            *backup_file.lock().unwrap() = Some(f);
        }))),
    };
    let s = idx.sync(&meanwhile, &key).unwrap();
    assert!(!s.rebuilt, "the backup's file was taken for one deleted");
    let f = backup_file.lock().unwrap().take().unwrap();
    assert!(idx.contains(&f.packs[0].blobs[0].id).unwrap());
    assert_eq!(idx.blob_count().unwrap(), 5);
}

#[test]
fn a_file_loaded_before_a_prune_elsewhere_is_not_absorbed_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(dir.path().join("repo"));
    backend.create().unwrap();
    let key = MasterKey::generate();
    let idx = LocalIndex::open(&dir.path().join("cache/index.redb")).unwrap();
    // Two ways the pruned file's rows came back: absorbed after the
    // backup's sync cleared the database (`other` absorbed and pruned
    // too), or after its replacement was absorbed.
    for clear_first in [true, false] {
        idx.clear().unwrap();
        for l in backend.list(FileKind::Index).unwrap() {
            backend.delete(FileKind::Index, &l.name).unwrap();
        }
        let (other, other_file) = write_index(&backend, &key, 2);
        if clear_first {
            idx.sync(&backend, &key).unwrap();
        }
        let (old, old_file) = write_index(&backend, &key, 3);
        // A lockless reader loads `old`; meanwhile a prune elsewhere
        // replaces it (and `other`), and a backup sharing the cache syncs.
        let meanwhile = Meanwhile {
            inner: &backend,
            on_read: Some(old),
            hook: std::sync::Mutex::new(Some(Box::new(|| {
                prune_elsewhere(&backend, &key, (old, &old_file));
                if clear_first {
                    prune_elsewhere(&backend, &key, (other, &other_file));
                }
                let s = idx.sync(&backend, &key).unwrap();
                assert_eq!(s.rebuilt, clear_first);
            }))),
        };
        idx.sync(&meanwhile, &key).unwrap();
        let dropped = old_file.packs[0].blobs[1].id;
        assert!(
            !idx.contains(&dropped).unwrap(),
            "a blob the prune deleted is indexed again (clear first: {clear_first})"
        );
        let kept = old_file.packs[0].blobs[0].id;
        let r = idx.reader().unwrap();
        let at = r.lookup(&kept).unwrap().expect("kept blob indexed");
        assert_ne!(at.pack, old_file.packs[0].id, "clear first: {clear_first}");
    }
}

#[test]
fn a_replacement_stopped_after_its_first_file_leaves_the_old_files_indexed() {
    // `repair index` or prune writes several files, each superseding every
    // old one, then deletes the old ones. Stopped after the first, the old
    // files still name packs no new file lists: a sync that had absorbed
    // the new file left them out, and those packs could not be read.
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(dir.path().join("repo"));
    backend.create().unwrap();
    let key = MasterKey::generate();
    let (f1, f1_file) = write_index(&backend, &key, 2);
    let (f2, f2_file) = write_index(&backend, &key, 3);
    let first = IndexFile {
        packs: f1_file.packs.clone(),
        supersedes: vec![f1, f2],
    };
    let first_id = write_file(&backend, &key, &first);
    let idx = LocalIndex::open(&dir.path().join("cache/index.redb")).unwrap();
    // Listed first (or absorbed by another process sharing the cache).
    absorb_deferred(&idx, &first_id, &first);
    idx.sync(&backend, &key).unwrap();
    let only_in_f2 = f2_file.packs[0].blobs[2].id;
    let r = idx.reader().unwrap();
    let at = r.lookup(&only_in_f2).unwrap().expect("f2's pack indexed");
    assert_eq!(at.pack, f2_file.packs[0].id);
}

#[test]
fn a_file_written_before_a_clear_is_not_absorbed_after_it() {
    // A backup stalled after writing its index file: a prune elsewhere took
    // its lock for stale and deleted the file's packs, and a backup sharing
    // the cache found the file gone and cleared. Absorbed after that, the
    // rows named deleted packs, which that backup then took as stored.
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(dir.path().join("repo"));
    backend.create().unwrap();
    let key = MasterKey::generate();
    let idx = LocalIndex::open(&dir.path().join("cache/index.redb")).unwrap();
    let before = idx.clear_count().unwrap();
    let (id, f) = write_index(&backend, &key, 2);
    idx.clear().unwrap();
    assert!(!idx.add_index_file_deferred(&id, &f, before).unwrap());
    assert!(!idx.contains(&f.packs[0].blobs[0].id).unwrap());
    // Not cleared since: absorbed.
    let (id, f) = write_index(&backend, &key, 2);
    let now = idx.clear_count().unwrap();
    assert!(idx.add_index_file_deferred(&id, &f, now).unwrap());
    assert!(idx.contains(&f.packs[0].blobs[0].id).unwrap());
}

/// A backend whose every index file read is met by another process
/// clearing the shared database.
struct ClearedOnEachRead<'a> {
    inner: &'a LocalBackend,
    idx: &'a LocalIndex,
}

impl Backend for ClearedOnEachRead<'_> {
    crate::backend::forward_to_inner!(
        location,
        create,
        list,
        read_range,
        write,
        delete,
        stored_size
    );
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let data = self.inner.read(kind, name)?;
        self.idx.clear().unwrap();
        Ok(data)
    }
}

#[test]
fn a_sync_cleared_under_it_every_time_fails_rather_than_end_incomplete() {
    // After its last attempt it returned Ok with nothing absorbed: callers
    // took the empty index for the repository's (blobs "not in the index",
    // cached packs of live data tidied away).
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(dir.path().join("repo"));
    backend.create().unwrap();
    let key = MasterKey::generate();
    write_index(&backend, &key, 3);
    let idx = LocalIndex::open(&dir.path().join("cache/index.redb")).unwrap();
    let cleared = ClearedOnEachRead {
        inner: &backend,
        idx: &idx,
    };
    let e = idx.sync(&cleared, &key).unwrap_err();
    assert!(matches!(e, Error::Locked(_)), "{e}");
    assert!(e.to_string().contains("run the command again"), "{e}");
    // Left alone, the next sync completes.
    assert_eq!(idx.sync(&backend, &key).unwrap().blobs, 3);
}

/// Damage found in the open file makes the next call open the file at the
/// path again, rebuilt by another process if it did so meanwhile (left in
/// place), else created empty; a clear count read from the old file admits
/// nothing into the new one, whose count may be the same number.
#[test]
fn a_condemned_file_is_opened_again_and_its_clear_counts_expire() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(dir.path().join("repo"));
    backend.create().unwrap();
    let key = MasterKey::generate();
    let path = dir.path().join("cache/index.redb");
    let idx = LocalIndex::open(&path).unwrap();
    // Another process with the same file open.
    let other = LocalIndex::open(&path).unwrap();
    let (_, f) = write_index(&backend, &key, 3);
    idx.sync(&backend, &key).unwrap();
    let before = idx.clear_count().unwrap();
    let first = idx.file_incarnation();

    assert_eq!(idx.condemn(), Some(path.as_path()));
    assert!(!path.exists(), "the damaged file was kept");
    assert_ne!(idx.file_incarnation(), first);
    // The next call opens a new file; the sync fills it.
    assert!(!idx.contains(&f.packs[0].blobs[0].id).unwrap());
    let rebuilt = std::fs::metadata(&path).unwrap().ino();
    assert_eq!(idx.sync(&backend, &key).unwrap().files_loaded, 1);
    assert!(idx.contains(&f.packs[0].blobs[0].id).unwrap());
    // Its clear count is the old one's number, but matches nothing of it.
    assert_ne!(idx.clear_count().unwrap(), before);
    let (id, late) = write_index(&backend, &key, 2);
    assert!(!idx.add_index_file_deferred(&id, &late, before).unwrap());
    assert!(!idx.contains(&late.packs[0].blobs[0].id).unwrap());

    // The other process meets the damage later: the rebuilt file stays,
    // and is the one it opens next.
    other.condemn();
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), rebuilt);
    assert!(other.contains(&f.packs[0].blobs[0].id).unwrap());
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), rebuilt);
    assert_eq!(other.sync(&backend, &key).unwrap().files_loaded, 1);
    assert!(idx.contains(&late.packs[0].blobs[1].id).unwrap());
}

#[test]
fn a_file_that_cannot_be_opened_again_is_stood_in_for_said_once_and_tried_again() {
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(dir.path().join("repo"));
    backend.create().unwrap();
    let key = MasterKey::generate();
    let path = dir.path().join("cache/index.redb");
    let idx = LocalIndex::open(&path).unwrap();
    let (_, f) = write_index(&backend, &key, 3);
    idx.sync(&backend, &key).unwrap();
    let blob = f.packs[0].blobs[0].id;

    // Damage is found, and a directory is in the way of a new file.
    idx.condemn();
    std::fs::create_dir(&path).unwrap();
    assert_eq!(idx.sync(&backend, &key).unwrap().files_loaded, 1);
    assert!(idx.contains(&blob).unwrap(), "the index in memory");
    let why = idx.stand_in_unsaid().expect("the stand-in is said");
    assert!(why.contains("index.redb"), "{why}");
    assert_eq!(idx.stand_in_unsaid(), None, "said twice");
    // Not due yet; then the way is still blocked.
    assert!(!idx.retry_file());
    assert!(!idx.retry_file_after(std::time::Duration::ZERO));
    assert!(path.is_dir());

    // Once the file can be opened, it is; the next sync fills it.
    std::fs::remove_dir(&path).unwrap();
    let before = idx.file_incarnation();
    assert!(idx.retry_file_after(std::time::Duration::ZERO));
    assert!(path.is_file());
    assert_ne!(idx.file_incarnation(), before);
    assert!(!idx.contains(&blob).unwrap(), "the new file is empty");
    assert_eq!(idx.sync(&backend, &key).unwrap().files_loaded, 1);
    assert!(idx.contains(&blob).unwrap());
    assert!(
        !idx.retry_file_after(std::time::Duration::ZERO),
        "nothing stands in"
    );
}

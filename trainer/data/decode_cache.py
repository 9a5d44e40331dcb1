"""The decode cache: a selection of a split decoded once, chunk by chunk and in parallel, into one memory-mapped uint8
file [N, 3, H, W] (.npy) per (dataset version, split, rows, eval crop), with a digest of each chunk beside it so that
a file is trusted by its content, not its size. Peak private memory is about one chunk per worker, and the file is
what the disk store maps. The space is reserved before decoding, workers end with their parent, and no temporary
file outlives a decode (a killed run's is removed by the next one)."""
from __future__ import annotations

import ctypes
import errno
import json
import multiprocessing
import os
import re
import shutil
import signal
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Optional

import datasets
import numpy as np
from tqdm.auto import tqdm

from ..errors import UsageError, human_size, warn
from .decode import BadImage, JOB, decode_chunk, encoded, set_job

CHUNK = 500  # images a worker decodes between writes; small enough that a chunk of 224-px images is ~75 MB
DIGESTS = ".digests.json"  # beside each cache file: rows, chunk size, one digest per chunk, the rows skipped as bad
_TMP = re.compile(r"\.tmp(\d+)c?\.npy(\.digests\.json)?$")  # a decode's temporary files, named by its process id

try:  # xxhash comes with datasets; about 10 GB/s, so checking a file costs about what reading it costs
    import xxhash

    def _digest(data: Any) -> str:
        return xxhash.xxh3_64_hexdigest(data)
except ImportError:  # pragma: no cover
    import hashlib

    def _digest(data: Any) -> str:
        return hashlib.blake2b(data, digest_size=8).hexdigest()


def default_workers() -> int:
    """$VIT_TRAINER_DECODE_WORKERS, else the CPU cores this process may use, at most 8 (decoding is the first job of a
    run, nothing else runs)."""
    if os.environ.get("VIT_TRAINER_DECODE_WORKERS"):
        return max(1, int(os.environ["VIT_TRAINER_DECODE_WORKERS"]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(cores, 8)


def chunk_digests(array: np.ndarray, chunk: int = CHUNK) -> list[str]:
    """One digest per `chunk` rows of a decoded file."""
    return [_digest(np.ascontiguousarray(array[i:i + chunk])) for i in range(0, len(array), chunk)]


def cached_rows(path: str, n: int) -> Optional[tuple[np.ndarray, list[int]]]:
    """(the file mapped read-only, the positions skipped as bad) when the cache file is complete, holds the n chosen
    rows less the skipped ones, and every chunk's content matches its digest; None means decode again."""
    try:
        with open(path + DIGESTS) as f:
            meta = json.load(f)
        array = np.load(path, mmap_mode="r")
        skipped = [int(k) for k in meta.get("skipped", [])]
        whole = (array.ndim == 4 and array.dtype == np.uint8 and array.shape[0] == n - len(skipped)
                 and meta["rows"] == array.shape[0])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if whole and chunk_digests(array, int(meta["chunk"])) == meta["digests"]:
        return array, skipped
    warn(f"the decode cache file {path} is damaged (its content does not match its digests): decoding it again")
    return None


def _check_room(folder: str, need: int) -> None:
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".write-test-{os.getpid()}")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as err:
        raise UsageError(f"cannot write the decode cache in {folder} ({err.strerror}): pass --cache-dir with a "
                         "writable folder (or set VIT_TRAINER_CACHE)") from None
    free = shutil.disk_usage(folder).free
    if need > free:
        raise UsageError(f"the decode cache needs {human_size(need)} in {folder}, which has {human_size(free)} free: "
                         "free some space or pass --cache-dir on a larger disk")


def _remove_orphans(folder: str) -> None:
    """Temporary files of decodes whose process is gone (killed with SIGKILL, or a lost machine)."""
    for name in os.listdir(folder):
        m = _TMP.search(name)
        if not m:
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            os.remove(os.path.join(folder, name))
        except PermissionError:  # alive, another user's
            pass


def _reserve(tmp: str, shape: tuple[int, ...]) -> None:
    """Create the file and reserve its blocks now: a disk that cannot hold it fails here, with a line, not with a
    SIGBUS in a worker writing into a sparse memory map."""
    np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape).flush()
    fd = os.open(tmp, os.O_RDWR)
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as err:
        if err.errno != errno.EOPNOTSUPP:  # a file system without fallocate keeps the sparse file
            raise
    finally:
        os.close(fd)


def _die_with_parent() -> None:
    """A worker ends when the run that started it ends, however it ends (Linux: the parent-death signal)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker(*job: Any) -> None:
    _die_with_parent()
    for sig in (signal.SIGINT, signal.SIGTERM):  # the parent decides what a signal means, and stops the workers
        signal.signal(sig, signal.SIG_IGN)
    set_job(*job)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    for process in list(getattr(pool, "_processes", {}).values()):  # no public way before Python 3.14
        process.terminate()


def _decode_all(job: tuple, chunks: list[tuple[int, int]], workers: int, bar: tqdm) -> list[int]:
    """Decode every chunk, in this process or in workers; the positions skipped as bad."""
    bad: list[int] = []
    if workers <= 1 or len(chunks) <= 1:
        set_job(*job)
        for start, stop in chunks:
            done, skipped = decode_chunk(start, stop)
            bar.update(done)
            bad += skipped
        return bad
    # fork where there is one: the workers inherit the dataset (Arrow, memory-mapped) without pickling it.
    context = multiprocessing.get_context("fork" if os.name == "posix" and os.uname().sysname == "Linux" else "spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_worker, initargs=job)
    try:
        futures = [pool.submit(decode_chunk, s, e) for s, e in chunks]
        for future in as_completed(futures):
            done, skipped = future.result()
            bar.update(done)
            bad += skipped
    except BaseException:  # a bad image, a signal, a full disk: the workers stop now, not after their chunk
        _stop_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return sorted(bad)


def _compact(tmp: str, keep: np.ndarray) -> None:
    """Rewrite the file without the rows skipped as bad."""
    src = np.load(tmp, mmap_mode="r")
    out_path = tmp[:-4] + "c.npy"
    out = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.uint8, shape=(len(keep), *src.shape[1:]))
    for i in range(0, len(keep), CHUNK):
        out[i:i + CHUNK] = src[keep[i:i + CHUNK]]
    out.flush()
    del src, out
    os.replace(out_path, tmp)


def _publish(tmp: str, path: str, skipped: list[int]) -> None:
    """Digests beside the file, both on disk, then the final names: a crash never leaves a complete-looking file."""
    array = np.load(tmp, mmap_mode="r")
    meta = {"rows": int(array.shape[0]), "chunk": CHUNK, "digests": chunk_digests(array), "skipped": skipped}
    with open(tmp + DIGESTS, "w") as f:
        json.dump(meta, f)
    for name in (tmp, tmp + DIGESTS):
        fd = os.open(name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(tmp + DIGESTS, path + DIGESTS)
    os.replace(tmp, path)


def decode_to_file(ds: datasets.Dataset, column: str, indices: np.ndarray, shape: tuple[int, int, int], path: str,
                   workers: int = 0, progress: bool = True, crop_size: Optional[int] = None, what: str = "the split",
                   skip_bad: bool = False, chunk: int = CHUNK) -> tuple[str, list[int]]:
    """Write the decoded rows to `path` (.npy, written under a temporary name, then renamed): (path, the positions
    skipped as bad, with skip_bad). crop_size: store photos as the centre squares of side shape[-1] that this eval
    crop size is cut from; None: store the images as they are, all of `shape` (NotOneSize when one is not)."""
    folder = os.path.dirname(os.path.abspath(path))
    _check_room(folder, len(indices) * int(np.prod(shape)))
    _remove_orphans(folder)
    tmp = f"{path}.tmp{os.getpid()}.npy"
    chunks = [(s, min(s + chunk, len(indices))) for s in range(0, len(indices), chunk)]
    bar = tqdm(total=len(indices), desc="decoding", unit="img", disable=not progress, leave=False, dynamic_ncols=True)
    try:
        _reserve(tmp, (len(indices), *shape))
        bad = _decode_all((encoded(ds, column), column, np.asarray(indices), tmp, crop_size, skip_bad), chunks,
                          workers or default_workers(), bar)
        if bad:
            _compact(tmp, np.setdiff1d(np.arange(len(indices)), bad))
        _publish(tmp, path, bad)
    except BadImage as err:
        raise UsageError(f"{what} row {err.row} holds no image that decodes ({err.reason}): repair or remove that "
                         "row, or pass --skip-bad-images to leave such images out") from None
    except BrokenProcessPool:
        raise UsageError("a decoding worker died (killed by the system, most likely for memory): free memory, or set "
                         "VIT_TRAINER_DECODE_WORKERS=1 to decode in one process") from None
    except OSError as err:
        free = human_size(shutil.disk_usage(folder).free)
        raise UsageError(f"could not write the decode cache {path} ({err.strerror}; {free} free there): free some "
                         "space or pass --cache-dir on a larger disk") from None
    finally:
        bar.close()
        JOB.clear()
        for name in (tmp, tmp + DIGESTS, tmp[:-4] + "c.npy"):
            if os.path.exists(name):
                os.remove(name)
    return path, bad

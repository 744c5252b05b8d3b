"""Work ahead of the consumer in background threads, in order, with a bounded queue.

The folder loop uses it to read and detect the next images while the landmark model
runs on the current one, or (``workers`` > 1) to run whole images side by side: image
decoding (Pillow, OpenCV), OpenCV and onnxruntime release the GIL, so on two cores the
work overlaps. At most ``ahead`` results wait at a time, so memory stays flat however
long the folder is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


def prefetched(
    fn: Callable[[In], Out], items: Iterable[In], ahead: int, workers: int = 1
) -> Iterator[Out]:
    """``fn(item)`` for each item, in the items' order, computed up to ``ahead`` items
    before the consumer asks for them (0: no thread, each when asked) by ``workers``
    threads (``ahead`` is raised to ``workers``, so that each has an item).

    An exception of ``fn`` is raised when the consumer reaches its item, as it would be
    without the thread; callers that want to go on record their errors in the result.
    Stopping early (break, an exception, Ctrl-C in the consumer) cancels what has not
    started and waits for the calls under way, so no thread outlives the loop.
    """
    if ahead < 1:
        yield from map(fn, items)
        return
    workers = max(1, int(workers))
    ahead = max(ahead, workers)
    # One worker: the prefetched stage runs in order, and with the consumer that makes
    # two busy threads, one per core of the machines this is tuned for. More workers:
    # items run side by side, and the order is kept by the queue of futures.
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prefetch")
    pending: deque[Future[Out]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def read_ahead(items: Iterable[Out], ahead: int) -> Generator[Out, None, None]:
    """The items of ``items``, pulled up to ``ahead`` ahead of the consumer by a
    background thread (0: no thread): for sources that must be read in order by one
    reader, such as video frames, whose decoding then overlaps the work on the previous
    frame. An exception of the source is raised at its place. Close the iterator (or
    finish it) to stop the thread; no item is pulled after that.
    """
    if ahead < 1:
        yield from items
        return
    import queue
    import threading

    box: queue.Queue[tuple[bool, object]] = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def pull() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        box.put((True, item), timeout=0.05)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            box.put((False, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            box.put((False, exc))

    thread = threading.Thread(target=pull, name="prefetch-read", daemon=True)
    thread.start()
    try:
        while True:
            more, value = box.get()
            if not more:
                if value is not None:
                    raise value  # type: ignore[misc]
                return
            yield value  # type: ignore[misc]
    finally:
        stop.set()
        while thread.is_alive():  # unblock a put and wait for the reader to stop
            try:
                box.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()

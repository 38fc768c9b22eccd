"""The widget keeps its own work small next to training: paced redraws, sparse maps.

The throughput target (training with the widget streaming at ≥ 90 % of headless)
is measured by ``benchmarks/widget_throughput.py``; these tests pin the two
mechanisms it relies on.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time

import numpy as np
import pytest

from tsimcne_widgets.widget.scheduler import LatestOnlyScheduler


def burn_cpu(seconds: float) -> None:
    """Spin until this thread has used ``seconds`` of CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def run_scheduler(apply_cpu: float, duration: float, **kwargs) -> list[tuple[float, float]]:
    """Submit items from a thread every 5 ms for ``duration`` s; (start, end) of each apply."""
    spans: list[tuple[float, float]] = []

    def apply(item) -> None:
        started = time.monotonic()
        burn_cpu(apply_cpu)
        spans.append((started, time.monotonic()))

    async def scenario() -> None:
        scheduler = LatestOnlyScheduler(apply, asyncio.get_running_loop(), **kwargs)
        stop = threading.Event()

        def producer() -> None:
            k = 0
            while not stop.is_set():
                k += 1
                scheduler.submit(k)
                time.sleep(0.005)

        worker = threading.Thread(target=producer)
        worker.start()
        await asyncio.sleep(duration)
        stop.set()
        worker.join()

    asyncio.run(scenario())
    return spans


def test_costly_applies_are_paced_to_the_busy_fraction():
    # 40 ms of CPU per apply at a 20 % share: at least 160 ms idle after each.
    spans = run_scheduler(0.04, 1.5, min_interval=0.0, max_busy_fraction=0.2, max_interval=10.0)
    assert len(spans) >= 3
    gaps = [start - end for (_, end), (start, _) in zip(spans, spans[1:])]
    assert min(gaps) >= 0.15
    # CPU share of the kernel thread (wall time would also count a busy machine's load).
    assert 0.04 * len(spans) / (spans[-1][1] - spans[0][0]) <= 0.25


def test_pacing_off_applies_at_the_rate_limit():
    spans = run_scheduler(0.04, 1.0, min_interval=0.0, max_busy_fraction=1.0)
    gaps = [start - end for (_, end), (start, _) in zip(spans, spans[1:])]
    assert len(spans) >= 5 and min(gaps) < 0.05


def test_pacing_never_holds_the_map_back_longer_than_max_interval():
    # At a 1 % share a 50 ms apply would wait ~5 s; max_interval keeps updates coming.
    spans = run_scheduler(0.05, 2.0, min_interval=0.0, max_busy_fraction=0.01, max_interval=0.3)
    starts = [start for start, _ in spans]
    assert len(spans) >= 4
    # Start to start: max_interval, or the apply's own wall time on a busy machine.
    durations = [end - start for start, end in spans]
    for (a, b), took in zip(zip(starts, starts[1:]), durations):
        assert b - a <= max(0.3, took) + 0.25


def test_one_slow_apply_does_not_stall_later_updates():
    costs = iter([0.005] * 3 + [0.3] + [0.005] * 1000)
    spans: list[tuple[float, float]] = []

    def apply(item) -> None:
        started = time.monotonic()
        burn_cpu(next(costs))
        spans.append((started, time.monotonic()))

    async def scenario() -> None:
        scheduler = LatestOnlyScheduler(apply, asyncio.get_running_loop(), min_interval=0.0,
                                        max_busy_fraction=0.05, max_interval=10.0)
        for k in range(60):
            scheduler.submit(k)
            await asyncio.sleep(0.05)

    asyncio.run(scenario())
    assert len(spans) >= 5
    # Paced by the median of recent costs (5 ms), not by the 0.3 s outlier (a garbage
    # collection, say), which alone would hold the next update back ~5.7 s.
    slow = max(range(len(spans)), key=lambda k: spans[k][1] - spans[k][0])
    assert spans[slow + 1][0] - spans[slow][1] < 1.0


@pytest.mark.parametrize("kwargs", [dict(max_busy_fraction=0.0), dict(max_busy_fraction=1.5),
                                    dict(max_interval=-1.0)])
def test_bad_pacing_arguments_are_refused(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        LatestOnlyScheduler(lambda item: None, None, **kwargs)


def test_flush_applies_at_once_whatever_the_pacing():
    applied = []
    scheduler = LatestOnlyScheduler(lambda item: (burn_cpu(0.02), applied.append(item)), None,
                                    max_busy_fraction=0.01)
    scheduler.submit(1)
    assert scheduler.flush()
    scheduler.submit(2)
    assert scheduler.next_delay() > 1.0  # paced: ~2 s would have to pass on a loop
    assert scheduler.flush() and applied == [1, 2]


def test_widget_runs_make_maps_less_often_than_plain_callbacks():
    from tsimcne_widgets import TSimCNE
    from tsimcne_widgets.data.load import ImageSet
    from tsimcne_widgets.widget.explorer import Explorer
    from tsimcne_widgets.widget.session import WIDGET_MAP_TIME_FRACTION

    if hasattr(os, "sched_getaffinity"):
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(before)})
    try:
        rng = np.random.default_rng(0)
        images = ImageSet(rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8))
        params = dict(total_epochs=(2, 1, 1), batch_size=32, backbone="resnet10",
                      backbone_width=8, device="cpu", random_state=0)
        explorer = Explorer(images, **params)
        explorer.start()
        assert explorer.wait(timeout=300) and explorer.state == "finished"
        estimator = TSimCNE(**params).fit(images, callbacks=[lambda snapshot: None])
    finally:
        if hasattr(os, "sched_getaffinity"):
            os.sched_setaffinity(0, before)
    assert WIDGET_MAP_TIME_FRACTION < estimator.trainer_.map_time_fraction
    assert explorer.training.trainer.map_time_fraction == WIDGET_MAP_TIME_FRACTION

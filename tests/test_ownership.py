"""Comm messages arriving on another thread are handled on the widgets' own thread.

JupyterLab 4.6 sends widget messages to a kernel subshell, which ipykernel 7 runs on a
thread of its own (see ``tsimcne_widgets/widget/ownership.py``).  The first tests deliver
messages from a plain thread; the last one uses a real ipykernel and a real subshell.
"""

from __future__ import annotations

import asyncio
import json
import threading

import ipywidgets
import numpy as np
import pytest

from tsimcne_widgets.widget.ownership import MessageOwner

CLICK = {"content": {"comm_id": "x", "data": {"method": "custom", "content": {"event": "click"}}},
         "buffers": []}


def _from_thread(function, *args) -> None:
    worker = threading.Thread(target=function, args=args)
    worker.start()
    worker.join()


def _click_threads(box, button, adopt: bool) -> list[str]:
    """Click ``button`` from another thread; names of the threads its handler ran on."""
    ran_on: list[str] = []
    button.on_click(lambda _: ran_on.append(threading.current_thread().name))

    async def scenario():
        if adopt:
            MessageOwner(asyncio.get_running_loop()).adopt(box)
        if button not in box.children:
            box.children = (*box.children, button)  # added after adoption, like a gallery cell
        _from_thread(button.comm.handle_msg, CLICK)
        for _ in range(3):
            await asyncio.sleep(0)

    asyncio.run(scenario())
    return ran_on


def test_a_message_from_another_thread_runs_on_the_owning_thread():
    main = threading.current_thread().name
    button = ipywidgets.Button()
    assert _click_threads(ipywidgets.VBox([ipywidgets.HBox([button])]), button, adopt=True) == [main]
    # The control: without adoption the handler runs on the sending thread.
    other = ipywidgets.Button()
    ran_on = _click_threads(ipywidgets.VBox([other]), other, adopt=False)
    assert ran_on and ran_on != [main]


def test_widgets_added_to_an_adopted_box_later_are_adopted():
    button = ipywidgets.Button()
    assert _click_threads(ipywidgets.VBox([]), button, adopt=True) == [threading.current_thread().name]


def test_without_a_loop_messages_are_handled_where_they_arrive():
    button = ipywidgets.Button()
    owner = MessageOwner(None)
    owner.adopt(button)
    ran_on: list[str] = []
    button.on_click(lambda _: ran_on.append(threading.current_thread().name))
    _from_thread(button.comm.handle_msg, CLICK)
    assert len(ran_on) == 1 and ran_on[0] != threading.current_thread().name


def test_explorer_handles_a_colour_change_from_a_subshell_thread_on_its_own_thread():
    # The race seen in the browser: the colour dropdown's change and Bokeh's messages on
    # a subshell thread while the main thread redraws.  Here: the change arrives on
    # another thread; the map's colouring must be redone on the explorer's thread.
    from tsimcne_widgets import Explorer

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 8, 8, 3), dtype=np.uint8)
    threads: list[str] = []

    async def scenario():
        import pandas as pd

        explorer = Explorer(images, metadata=pd.DataFrame({"size": np.arange(50.0)}))
        explorer.set_embedding(rng.normal(size=(50, 2)).astype(np.float32))
        explorer.widget  # noqa: B018 - builds and adopts the widget tree
        explorer.model.observe(lambda _: threads.append(threading.current_thread().name),
                               "color_column")
        dropdown = explorer.controls.color
        values = [o[1] if isinstance(o, tuple) else o for o in dropdown.options]
        index = values.index("size")  # ipywidgets syncs a dropdown's index
        message = {"content": {"comm_id": dropdown.model_id,
                               "data": {"method": "update", "state": {"index": index},
                                        "buffer_paths": []}},
                   "buffers": []}
        _from_thread(dropdown.comm.handle_msg, message)
        assert explorer.color_column != "size"  # not handled on the sending thread
        for _ in range(3):
            await asyncio.sleep(0)
        assert explorer.color_column == "size" and explorer.canvas.color_bar.visible

    asyncio.run(scenario())
    assert threads == [threading.current_thread().name]


@pytest.mark.slow
def test_a_real_kernel_subshell_message_is_handled_on_the_main_thread():
    jupyter_client = pytest.importorskip("jupyter_client")
    manager, client = jupyter_client.manager.start_new_kernel(kernel_name="python3")
    try:
        if "kernel subshells" not in client.kernel_info(reply=True)["content"].get(
                "supported_features", []):
            pytest.skip("this ipykernel has no subshells")

        def run(code: str) -> str:
            reply = client.execute_interactive(code, timeout=120, output_hook=outputs.append)
            assert reply["content"]["status"] == "ok", reply["content"]
            return "".join(o["content"].get("text", "") for o in outputs
                           if o["msg_type"] == "stream")

        outputs: list[dict] = []
        ids = run(
            "import asyncio, json, threading, ipywidgets\n"
            "from tsimcne_widgets.widget.ownership import MessageOwner\n"
            "ran_on = {}\n"
            "adopted, alone = ipywidgets.Button(), ipywidgets.Button()\n"
            "adopted.on_click(lambda _: ran_on.update(adopted=threading.current_thread().name))\n"
            "alone.on_click(lambda _: ran_on.update(alone=threading.current_thread().name))\n"
            "MessageOwner(asyncio.get_running_loop()).adopt(ipywidgets.VBox([adopted]))\n"
            "print(adopted.model_id, alone.model_id, end='')").split()
        request = client.session.msg("create_subshell_request", {})
        client.control_channel.send(request)
        subshell = client.control_channel.get_msg(timeout=30)["content"]["subshell_id"]

        def on_subshell(msg_type: str, content: dict) -> None:
            message = client.session.msg(msg_type, content)
            message["header"]["subshell_id"] = subshell
            client.shell_channel.send(message)

        # ipykernel 7.4 sends a comm's messages to the subshell its last published message
        # answered: code on the subshell (a subshell console, say) that touches the
        # widgets moves them there.
        on_subshell("execute_request", {"code": "adopted.tooltip = alone.tooltip = 'moved'",
                                        "silent": False})
        while client.get_shell_msg(timeout=30)["msg_type"] != "execute_reply":
            pass
        for comm_id in ids:
            on_subshell("comm_msg", {"comm_id": comm_id, "data": CLICK["content"]["data"]})
        for _ in range(50):
            outputs.clear()
            shown = json.loads(run("print(json.dumps(ran_on), end='')"))
            if len(shown) == 2:
                break
        assert len(shown) == 2, f"not every click was handled: {shown}"
        # The control: a widget nobody adopted runs on the subshell's thread.
        assert shown["alone"] != "MainThread"
        assert shown["adopted"] == "MainThread"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)

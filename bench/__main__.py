"""``python -m bench``: run the registered benchmark cases side by side;
``python -m bench plot <results.json>``: redraw a run's picture from its JSON."""

import sys

from bench.harness import main

if __name__ == "__main__":
    if sys.argv[1:2] == ["plot"]:
        from bench.plot import main as plot_main

        raise SystemExit(plot_main(sys.argv[2:]))
    raise SystemExit(main())

#!/usr/bin/env python3
"""A small curses program for capture.py: a boxed dashboard with colours, a scrolling log pane, a counter.

Each key redraws; `q` quits. No clocks or randomness, so its output depends only on the keys it gets.
"""

from __future__ import annotations

import curses


def main(stdscr: curses.window) -> None:
    curses.start_color()
    curses.use_default_colors()
    for i in range(1, 8):
        curses.init_pair(i, i, -1)
    curses.init_pair(8, curses.COLOR_BLACK, curses.COLOR_CYAN)
    curses.curs_set(0)
    rows, cols = stdscr.getmaxyx()
    log = curses.newwin(rows - 12, cols - 4, 8, 2)
    log.scrollok(True)
    log.idlok(True)
    counter = 0
    while True:
        stdscr.erase()
        stdscr.box()
        stdscr.addstr(0, 2, " Stem colonies ", curses.color_pair(8) | curses.A_BOLD)
        for i in range(5):
            attr = curses.color_pair(1 + (i + counter) % 7)
            stdscr.addstr(2 + i, 4, f"colony-{i:02d}  agent=claude  state=running  tokens={counter * 1000 + i}", attr)
        stdscr.addstr(rows - 2, 2, f" keys pressed: {counter}  press q to quit ", curses.A_REVERSE)
        stdscr.addstr(2, cols - 20, "中文 ✓ é", curses.A_UNDERLINE)
        stdscr.noutrefresh()
        for j in range(12):
            log.addstr(f"[{counter}:{j:02d}] log line with some words in it\n", curses.color_pair(1 + j % 7))
        log.noutrefresh()
        curses.doupdate()
        key = stdscr.getch()
        if key == ord("q"):
            break
        counter += 1


if __name__ == "__main__":
    curses.wrapper(main)

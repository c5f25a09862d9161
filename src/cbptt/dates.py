"""A built-in sequence-to-sequence task: dates written the ways people write them, paired with
their ISO form ("Tuesday, March 3, 1998" -> "1998-03-03").

Days are drawn uniformly from ``first_year``-01-01 to ``last_year``-12-31 (by default
1950-2049) and each is written in one of ``FORMATS``, drawn uniformly, by the standard
library's ``datetime`` (weekdays, ordinals, days of each month). Names are English,
whatever the locale (spelt out here, not taken from ``calendar.month_name``, which follows
``LC_TIME``). Two conventions make every source mean one date:

- two-digit years are the year of the span ``first_year`` .. ``first_year + 99`` with those
  last two digits ("98" is 1998 and "49" is 2049 with the default span), so the span of
  years is at most a century;
- numbers separated by slashes are month first (US: "3/4/98" is March 4), by dots day first
  (European: "3.4.1998" is April 3).

The same arguments give the same pairs (a NumPy ``Generator`` seeded with ``seed``).
"""
import datetime

import numpy as np

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _ordinal(day):
    """1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, ..., 21st, 22nd, 23rd, ..., 31st."""
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _fields(day):
    """The pieces a format writes: weekday and month names (full and three letters), day,
    month and year as numbers."""
    month, weekday = MONTHS[day.month - 1], WEEKDAYS[day.weekday()]
    return dict(A=weekday, a=weekday[:3], B=month, b=month[:3], d=day.day, m=day.month,
                Y=day.year, y=day.year % 100, o=_ordinal(day.day))


# name: how it writes a day (the example is 1998-03-03)
FORMATS = {
    "weekday month day, year": lambda f: f"{f['A']}, {f['B']} {f['d']}, {f['Y']}",
    "month day, year": lambda f: f"{f['B']} {f['d']}, {f['Y']}",
    "month ordinal, year": lambda f: f"{f['B']} {f['o']}, {f['Y']}",
    "day month year": lambda f: f"{f['d']} {f['B']} {f['Y']}",
    "ordinal of month year": lambda f: f"{f['o']} of {f['B']} {f['Y']}",
    "wkd day mon yy": lambda f: f"{f['a']} {f['d']} {f['b']} {f['y']:02d}",
    "wkd, day mon year": lambda f: f"{f['a']}, {f['d']} {f['b']} {f['Y']}",
    "dd mon year": lambda f: f"{f['d']:02d} {f['b']} {f['Y']}",
    "mon day, year": lambda f: f"{f['b']} {f['d']}, {f['Y']}",
    "day-mon-yy": lambda f: f"{f['d']}-{f['b']}-{f['y']:02d}",
    "month day year, lower case": lambda f: f"{f['B']} {f['d']} {f['Y']}".lower(),
    "m/d/yy": lambda f: f"{f['m']}/{f['d']}/{f['y']:02d}",
    "mm/dd/year": lambda f: f"{f['m']:02d}/{f['d']:02d}/{f['Y']}",
    "d.m.year": lambda f: f"{f['d']}.{f['m']}.{f['Y']}",
}


def format_date(day, name):
    """``day`` (a ``datetime.date``) written in the format ``name`` (a key of FORMATS)."""
    if name not in FORMATS:
        raise ValueError(f"unknown date format {name!r}; choose from {', '.join(FORMATS)}")
    return FORMATS[name](_fields(day))


def date_pairs(count, seed=None, first_year=1950, last_year=2049, formats=None, exclude=()):
    """``count`` pairs (source, ISO date), e.g. ("Tue 3 Mar 98", "1998-03-03").

    formats: names of FORMATS to draw from (default all). exclude: sources never to return
    (e.g. a training set's, to draw a held-out set apart from it); others are drawn in their
    place. Sources may repeat within the pairs returned (as drawn)."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count must be an integer >= 0, got {count!r}")
    if not (datetime.MINYEAR <= first_year <= last_year <= datetime.MAXYEAR):
        raise ValueError(f"the years must satisfy {datetime.MINYEAR} <= first_year <= "
                         f"last_year <= {datetime.MAXYEAR}, got {first_year} and {last_year}")
    if last_year - first_year >= 100:
        raise ValueError(f"the span of years is at most a century (two-digit years must "
                         f"mean one year), got {first_year}-{last_year}")
    names = list(FORMATS) if formats is None else list(formats)
    for name in names:
        if name not in FORMATS:
            raise ValueError(f"unknown date format {name!r}; choose from {', '.join(FORMATS)}")
    if not names:
        raise ValueError("formats: expected at least one format name")
    first = datetime.date(first_year, 1, 1).toordinal()
    days = datetime.date(last_year, 12, 31).toordinal() - first + 1
    rng = np.random.default_rng(seed)
    exclude = set(exclude)
    pairs, fruitless = [], 0
    while len(pairs) < count:
        if fruitless == 100:
            raise ValueError(f"exclude holds (nearly) every source of these years and formats; "
                             f"{len(pairs)} of {count} pairs drawn")
        before = need = count - len(pairs)
        offsets = rng.integers(0, days, need)
        which = rng.integers(0, len(names), need)
        for offset, index in zip(offsets, which):
            day = datetime.date.fromordinal(first + int(offset))
            source = FORMATS[names[index]](_fields(day))
            if source not in exclude:
                pairs.append((source, day.isoformat()))
        fruitless = fruitless + 1 if count - len(pairs) == before else 0
    return pairs


def read_two_digit_year(yy, first_year=1950):
    """The year of the span first_year .. first_year + 99 whose last two digits are yy."""
    year = first_year - first_year % 100 + yy
    return year if year >= first_year else year + 100

"""cbptt.dates: every source read back (by datetime.strptime and the documented conventions)
is its ISO date; the years, formats, seeds and exclusions."""
import datetime
import re

import pytest

from cbptt import dates

# how datetime.strptime reads each format (ordinals' suffixes removed first; %y replaced by
# the documented century window, not strptime's)
STRPTIME = {
    "weekday month day, year": "%A, %B %d, %Y",
    "month day, year": "%B %d, %Y",
    "month ordinal, year": "%B %d, %Y",
    "day month year": "%d %B %Y",
    "ordinal of month year": "%d of %B %Y",
    "wkd day mon yy": "%a %d %b %y",
    "wkd, day mon year": "%a, %d %b %Y",
    "dd mon year": "%d %b %Y",
    "mon day, year": "%b %d, %Y",
    "day-mon-yy": "%d-%b-%y",
    "month day year, lower case": "%B %d %Y",
    "m/d/yy": "%m/%d/%y",
    "mm/dd/year": "%m/%d/%Y",
    "d.m.year": "%d.%m.%Y",
}


def read_back(source, name, first_year=1950):
    text = re.sub(r"(\d+)(st|nd|rd|th)\b", r"\1", source)
    fmt = STRPTIME[name]
    if "%y" in fmt:      # strptime's own window (69-99 -> 19xx) is not ours
        yy = int(re.search(r"(\d\d)$", text).group(1))
        text = text[:-2] + str(dates.read_two_digit_year(yy, first_year))
        fmt = fmt.replace("%y", "%Y")
    return datetime.datetime.strptime(text, fmt).date()


def test_the_examples_of_the_docstrings():
    day = datetime.date(1998, 3, 3)
    written = {name: dates.format_date(day, name) for name in dates.FORMATS}
    assert written == {
        "weekday month day, year": "Tuesday, March 3, 1998",
        "month day, year": "March 3, 1998",
        "month ordinal, year": "March 3rd, 1998",
        "day month year": "3 March 1998",
        "ordinal of month year": "3rd of March 1998",
        "wkd day mon yy": "Tue 3 Mar 98",
        "wkd, day mon year": "Tue, 3 Mar 1998",
        "dd mon year": "03 Mar 1998",
        "mon day, year": "Mar 3, 1998",
        "day-mon-yy": "3-Mar-98",
        "month day year, lower case": "march 3 1998",
        "m/d/yy": "3/3/98",
        "mm/dd/year": "03/03/1998",
        "d.m.year": "3.3.1998",
    }
    assert dates.format_date(datetime.date(2049, 4, 11), "m/d/yy") == "4/11/49"
    assert dates.format_date(datetime.date(2001, 12, 22), "ordinal of month year") == \
        "22nd of December 2001"
    assert [dates._ordinal(d) for d in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 30, 31)] == \
        ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "30th",
         "31st"]


@pytest.mark.parametrize("name", sorted(dates.FORMATS))
def test_every_source_reads_back_as_its_iso_date(name):
    for source, iso in dates.date_pairs(300, seed=1, formats=[name]):
        assert read_back(source, name).isoformat() == iso, source


def test_pairs_cover_the_years_and_formats_and_are_deterministic():
    pairs = dates.date_pairs(3000, seed=5)
    assert pairs == dates.date_pairs(3000, seed=5)
    assert pairs != dates.date_pairs(3000, seed=6)
    years = [int(iso[:4]) for _, iso in pairs]
    assert min(years) == 1950 and max(years) == 2049
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d", iso) for _, iso in pairs)
    # every format is drawn (each source's shape tells its format apart but for May/mon)
    names = set()
    for source, iso in pairs:
        for name in dates.FORMATS:
            try:
                if read_back(source, name).isoformat() == iso:
                    names.add(name)
            except ValueError:
                pass
    assert names == set(dates.FORMATS)
    assert max(len(s) for s, _ in pairs) <= 32


def test_two_digit_years_follow_the_span():
    assert [dates.read_two_digit_year(y) for y in (50, 99, 0, 49)] == [1950, 1999, 2000, 2049]
    assert [dates.read_two_digit_year(y, 1960) for y in (60, 59, 0)] == [1960, 2059, 2000]
    for source, iso in dates.date_pairs(200, seed=2, first_year=1960, last_year=2059,
                                        formats=["m/d/yy"]):
        assert read_back(source, "m/d/yy", 1960).isoformat() == iso


def test_exclude_draws_a_disjoint_set():
    train = dates.date_pairs(2000, seed=0, formats=["m/d/yy", "d.m.year"],
                             first_year=2000, last_year=2000)
    held_out = dates.date_pairs(300, seed=1, formats=["m/d/yy", "d.m.year"],
                                first_year=2000, last_year=2000,
                                exclude={s for s, _ in train})
    assert len(held_out) == 300
    assert not {s for s, _ in held_out} & {s for s, _ in train}
    with pytest.raises(ValueError, match="exclude holds"):
        dates.date_pairs(5, seed=0, formats=["m/d/yy"], first_year=2000, last_year=2000,
                         exclude={dates.format_date(datetime.date.fromordinal(d), "m/d/yy")
                                  for d in range(datetime.date(2000, 1, 1).toordinal(),
                                                 datetime.date(2001, 1, 1).toordinal())})


@pytest.mark.parametrize("kwargs, message", [
    (dict(count=-1), "count must be an integer >= 0"),
    (dict(count=2.0), "count must be an integer >= 0"),
    (dict(count=2, first_year=1900, last_year=2000), "at most a century"),
    (dict(count=2, first_year=2000, last_year=1999), "first_year <= last_year"),
    (dict(count=2, formats=["ISO"]), "unknown date format 'ISO'"),
    (dict(count=2, formats=[]), "at least one format"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dates.date_pairs(**kwargs)
    assert dates.date_pairs(0) == []

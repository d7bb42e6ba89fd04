import json
import logging

import numpy as np
import pandas as pd
import pytest

from data import csv_format
from data.csv_format import CsvFormat, iter_csv, read_csv, sniff
from data.sources import SourceError, read_source, rejected_rows
from tests.helpers import config_for, run_component

PEOPLE = [("José", "Zürich", 31), ("Müller", "Köln", 45), ("Françoise", "São Paulo", 28), ("Søren", "Århus", 52),
          ("Crème brûlée", "Málaga", 39)]


def write(tmp_path, name: str, text: str, encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_a_headerless_numeric_file_keeps_its_first_row_and_numbers_its_columns(tmp_path):
    path = write(tmp_path, "numbers.csv", "14,23.5,1\n1,71.25,0\n8,2.0,1\n")
    frame, rejected, fmt = read_csv(path)
    assert fmt.header is False and fmt.column_names == ("column_1", "column_2", "column_3")
    assert list(frame.columns) == ["column_1", "column_2", "column_3"]
    assert list(frame.index) == [1, 2, 3] and frame.loc[1].tolist() == [14, 23.5, 1]
    assert rejected.empty


def test_a_headerless_mixed_file_is_data_and_a_headed_one_is_not(tmp_path):
    rows = "5.1,3.5,setosa\n4.9,3.0,setosa\n6.3,3.3,virginica\n5.8,2.7,virginica\n"
    frame, _, fmt = read_csv(write(tmp_path, "headerless.csv", rows))
    assert fmt.header is False and len(frame) == 4 and frame["column_3"].tolist()[0] == "setosa"
    frame, _, fmt = read_csv(write(tmp_path, "headed.csv", "sepal length,sepal width,species\n" + rows))
    assert fmt.header is True and list(frame.columns) == ["sepal length", "sepal width", "species"]
    assert list(frame.index) == [2, 3, 4, 5]


def test_all_text_columns_tell_a_header_by_whether_its_values_recur(tmp_path):
    body = "a fine film,pos\nboring and long,neg\nloved it,pos\nnot again,neg\n"
    assert sniff(write(tmp_path, "headed.csv", "review,sentiment\n" + body)).header is True
    assert sniff(write(tmp_path, "headerless.csv", body)).header is False


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_the_delimiter_is_sniffed_past_commas_in_text(tmp_path, delimiter):
    rows = [["name", "note", "age"], ["Ann", "tall, dark", "31"], ["Bob", "short, fair, kind", "45"], ["Cy", "ok", "28"]]
    frame, _, fmt = read_csv(write(tmp_path, "people.csv", "".join(delimiter.join(r) + "\n" for r in rows)))
    assert fmt.delimiter == delimiter and fmt.header is True
    assert frame["note"].tolist() == ["tall, dark", "short, fair, kind", "ok"]
    assert frame["age"].tolist() == [31, 45, 28]


def test_latin1_text_is_detected_and_transcoded(tmp_path, caplog):
    text = "name;city;age\n" + "".join(f"{n};{c};{a}\n" for n, c, a in PEOPLE)
    with caplog.at_level(logging.INFO, logger="data"):
        frame, _, fmt = read_csv(write(tmp_path, "latin.csv", text, "latin-1"))
    assert fmt.encoding not in ("utf-8", "utf-8-sig") and fmt.delimiter == ";"
    assert frame["name"].tolist() == [p[0] for p in PEOPLE] and frame["city"].tolist() == [p[1] for p in PEOPLE]
    assert f"encoding '{fmt.encoding}'" in caplog.text and "delimiter ';'" in caplog.text


def test_utf8_with_a_byte_order_mark(tmp_path):
    frame, _, fmt = read_csv(write(tmp_path, "bom.csv", "\ufeffid,city\n1,Zürich\n2,Köln\n"))
    assert fmt.encoding == "utf-8-sig" and list(frame.columns) == ["id", "city"]
    assert frame["city"].tolist() == ["Zürich", "Köln"]


def test_quoted_fields_hold_the_delimiter_quotes_and_newlines(tmp_path):
    text = 'id,comment,score\n1,"fine, really",3\n2,"two\nlines",4\n3,"say ""hi""",5\n4,plain,6\n'
    frame, rejected, fmt = read_csv(write(tmp_path, "quoted.csv", text))
    assert fmt.delimiter == "," and rejected.empty
    assert frame["comment"].tolist() == ["fine, really", "two\nlines", 'say "hi"', "plain"]
    assert frame["score"].tolist() == [3, 4, 5, 6]


def test_na_values_name_the_missing_markers(tmp_path):
    path = write(tmp_path, "na.csv", "x,y\n1.5,a\nNA,b\n?,c\n,d\n2.5,e\n")
    frame, _, fmt = read_csv(path, {"na_values": ["NA", "?", ""]})
    assert fmt.na_values == ("NA", "?", "")
    assert frame["x"].dtype == np.float64 and frame["x"].isna().tolist() == [False, True, True, True, False]
    default, _, _ = read_csv(path)  # pyarrow's markers do not include "?"
    assert default["x"].tolist()[2] == "?"


def test_given_options_override_sniffing(tmp_path):
    path = write(tmp_path, "given.csv", "a,b;c\n1,2;3\n4,5;6\n")
    options = {"delimiter": ";", "header": False, "encoding": "latin-1", "quote_char": "'"}
    frame, _, fmt = read_csv(path, options)
    assert (fmt.delimiter, fmt.header, fmt.encoding, fmt.quote_char) == (";", False, "latin-1", "'")
    assert frame["column_1"].tolist() == ["a,b", "1,2", "4,5"] and list(frame.index) == [1, 2, 3]


def test_column_names_name_a_headerless_file_or_replace_a_header(tmp_path):
    rows = "5.1,3.5,setosa\n4.9,3.0,setosa\n6.3,3.3,virginica\n"
    names = ["length", "width", "species"]
    frame, _, fmt = read_csv(write(tmp_path, "headerless.csv", rows), {"column_names": names})
    assert list(frame.columns) == names and fmt.column_names == tuple(names) and len(frame) == 3
    frame, _, _ = read_csv(write(tmp_path, "headed.csv", "a,b,c\n" + rows), {"column_names": names, "header": True})
    assert list(frame.columns) == names and list(frame.index) == [2, 3, 4]
    with pytest.raises(SourceError, match=r"column_names names 2 columns, but the file's first row has 3"):
        read_csv(write(tmp_path, "short.csv", rows), {"column_names": ["a", "b"]})


def test_column_types_force_an_integer_looking_column_to_string(tmp_path):
    path = write(tmp_path, "zip.csv", "zip,price\n01234,10\n98765,12\n00501,9\n")
    assert read_csv(path)[0]["zip"].tolist() == [1234, 98765, 501]
    frame, _, fmt = read_csv(path, {"column_types": {"zip": "string", "price": "float"}})
    assert frame["zip"].tolist() == ["01234", "98765", "00501"] and frame["price"].dtype == np.float64
    assert fmt.to_dict()["column_types"] == {"zip": "string", "price": "float"}
    with pytest.raises(SourceError, match=r"column_types names \['postcode'\], which the file lacks"):
        read_csv(path, {"column_types": {"postcode": "string"}})
    with pytest.raises(SourceError, match=r"row 3, column 'zip': 'x' is not integer; .*column_types\['zip'\]"):
        read_csv(write(tmp_path, "typo.csv", "zip,price\n1,2\nx,3\n"), {"column_types": {"zip": "integer"}})


@pytest.mark.parametrize("header", [True, False])
def test_a_wrong_width_line_is_rejected_with_its_file_row(tmp_path, header):
    lines = ["1.5,a", "2.5,b", "3.5,c,extra", "4.5,d"]
    path = write(tmp_path, "wide.csv", ("x,y\n" if header else "") + "\n".join(lines) + "\n")
    frame, rejected, fmt = read_csv(path)
    first = 2 if header else 1
    assert fmt.header is header
    assert rejected[["row", "value"]].values.tolist() == [[first + 2, "3.5,c,extra"]]
    assert list(frame.index) == [first, first + 1, first + 3]
    assert rejected["reason"].tolist() == ["3 fields where the header has 2"]


@pytest.mark.parametrize("encoding", ["utf-8", "ascii"])
def test_a_file_that_does_not_decode_names_the_row_and_the_option(tmp_path, encoding):
    text = "name,city\n" + "".join(f"{n},{c}\n" for n, c, _ in PEOPLE)
    path = write(tmp_path, "latin.csv", text, "latin-1")
    with pytest.raises(SourceError, match=rf"latin.csv: row 2, column 'name' does not decode as {encoding} .*"
                                          r"set data.csv.encoding to the file's encoding \(it looks like cp1252\)"):
        read_csv(path, {"encoding": encoding})


def test_a_sniffed_utf8_file_that_turns_latin1_past_the_sample_names_the_row(tmp_path):
    rows = [f"{i},plain" for i in range(1, 12001)] + ["12001,Zürich"]
    path = tmp_path / "late.csv"
    path.write_bytes(("id,city\n" + "\n".join(rows) + "\n").encode("latin-1"))
    assert path.stat().st_size > csv_format.SAMPLE_BYTES
    with pytest.raises(SourceError, match=r"late.csv: row 12002, column 'city' does not decode as utf-8 "
                                          r".*data.csv.encoding"):
        read_csv(path)


def test_iter_csv_streams_the_same_rows_as_read_csv(tmp_path, monkeypatch):
    monkeypatch.setattr(csv_format, "PARSE_BLOCK_BYTES", 4096)  # several pyarrow blocks from a small file
    lines = ["id;name;score;flag"] + [f"{i};n{i % 7};{i / 4};{'true' if i % 3 else 'false'}" for i in range(1, 1201)]
    lines[700] += ";extra"
    lines[1200] += ";more"
    path = write(tmp_path, "stream.csv", "\n".join(lines) + "\n")
    whole, rejected, fmt = read_csv(path)
    chunks = list(iter_csv(path, fmt, block_rows=250))
    assert [len(c) for c in chunks] == [250, 250, 250, 250, 198]
    pd.testing.assert_frame_equal(pd.concat(chunks), whole)
    pd.testing.assert_frame_equal(rejected_rows([b for c in chunks for b in c.attrs["rejected"]]), rejected)
    assert rejected["row"].tolist() == [701, 1201]
    assert [[b["row"] for b in c.attrs["rejected"]] for c in chunks] == [[], [], [701], [], [1201]]
    exact = list(iter_csv(path, fmt, block_rows=599))  # 1198 rows: the bad last line follows a full chunk
    assert len(exact[-1]) == 0 and [b["row"] for b in exact[-1].attrs["rejected"]] == [1201]
    pd.testing.assert_frame_equal(pd.concat(exact), whole)


def test_iter_csv_keeps_a_column_as_text_in_the_chunk_where_a_number_does_not_parse(tmp_path, monkeypatch):
    monkeypatch.setattr(csv_format, "PARSE_BLOCK_BYTES", 4096)
    lines = ["id,score"] + [f"{i},{i / 4}" for i in range(1, 1001)]
    lines[900] = "900,3x.5"
    path = write(tmp_path, "typo.csv", "\n".join(lines) + "\n")
    chunks = list(iter_csv(path, CsvFormat(), block_rows=500))
    assert chunks[0]["score"].dtype == np.float64 and chunks[0]["id"].dtype == np.int64
    assert chunks[1]["score"].loc[901] == "3x.5" and chunks[1]["score"].loc[902] == "225.25"


def test_format_round_trips_through_its_dict(tmp_path):
    fmt = sniff(write(tmp_path, "t.csv", "1\t2\n3\t4\n5\t6\n"))
    again = CsvFormat(**json.loads(json.dumps(fmt.to_dict())))
    assert again == fmt and again.delimiter == "\t" and again.column_names == ("column_1", "column_2")


def test_read_source_takes_the_label_by_its_name_in_the_file(tmp_path):
    text = "Flower Class;Petal Length (cm)\n" + "".join(f"{'a' if i % 2 else 'b'};{i / 10}\n" for i in range(20))
    raw = read_source(str(write(tmp_path, "flowers.csv", text, "cp1252")), label="Flower Class",
                      csv={"delimiter": None, "na_values": ["?"]})
    assert raw.label == "flower_class" and list(raw.frame.columns) == ["flower_class", "petal_length_cm"]
    assert raw.renamed == {"Flower Class": "flower_class", "Petal Length (cm)": "petal_length_cm"}
    assert raw.csv_format == {"delimiter": ";", "encoding": "utf-8", "header": True, "column_names": None,
                              "column_types": {}, "na_values": ["?"], "quote_char": '"', "decimal": ".",
                              "thousands": ""}


def test_a_column_type_outside_the_five_kinds_fails_at_load_time():
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match=r"data.csv.column_types.zip: Input should be 'string', 'integer'"):
        config_for(**{"data.csv.column_types": {"zip": "text"}})
    assert config_for(**{"data.csv.delimiter": "tab"}).data.csv.delimiter == "\t"


def test_ingest_records_the_sniffed_format_in_the_schema_and_mlflow(tmp_path, local_mlflow):
    import mlflow
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True)
    names = np.array(["sétosa", "versicolör", "virgínica"])[iris.target]
    rows = ["; ".join(f"{v:g}" for v in values).replace(" ", "") + f";{name}"
            for values, name in zip(iris.data.to_numpy(), names)]
    path = write(tmp_path, "iris.csv", "\n".join(rows) + "\n", "cp1252")
    config = config_for(**{"data.source": str(path), "data.label": "column_5"})
    run_component("ingest", config, {}, tmp_path / "out")
    schema = json.loads((tmp_path / "out" / "schema.json").read_text())
    assert schema["source"]["csv"]["delimiter"] == ";" and schema["source"]["csv"]["header"] is False
    assert schema["source"]["csv"]["column_names"] == [f"column_{i}" for i in range(1, 6)]
    assert schema["label"]["classes"] == ["sétosa", "versicolör", "virgínica"]
    params = mlflow.search_runs(filter_string="attributes.run_name = 'ingest'").iloc[0]
    assert params["params.csv_delimiter"] == ";" and params["params.csv_header"] == "false"
    assert params["params.csv_encoding"] == schema["source"]["csv"]["encoding"] != "utf-8"


@pytest.mark.parametrize("header", [True, False])
def test_a_decimal_comma_is_sniffed_where_the_delimiter_is_not_a_comma(tmp_path, header, monkeypatch):
    rows = "".join(f"{i};{i},{i % 4}5;{'ab'[i % 2]}\n" for i in range(1, 9))
    path = write(tmp_path, "european.csv", ("id;mass;kind\n" if header else "") + rows, "cp1252")
    frame, _, fmt = read_csv(path)
    assert fmt.decimal == "," and fmt.delimiter == ";" and fmt.header is header
    mass = frame["mass" if header else "column_2"]
    assert mass.dtype == "float64" and mass.tolist()[:3] == [1.15, 2.25, 3.35]
    monkeypatch.setattr(csv_format, "PARSE_BLOCK_BYTES", 64)  # several chunks, each cast from text
    streamed = pd.concat(iter_csv(path, fmt, block_rows=3))
    pd.testing.assert_frame_equal(streamed, frame)


def test_a_decimal_point_stays_and_a_comma_mark_needs_another_delimiter(tmp_path):
    assert sniff(write(tmp_path, "points.csv", "a;b\n1.5;2\n2,5;3\n")).decimal == "."
    assert sniff(write(tmp_path, "ints.csv", "a,b\n1,5\n2,5\n")).decimal == "."
    with pytest.raises(SourceError, match="data.csv.decimal ',' needs another delimiter"):
        sniff(write(tmp_path, "x.csv", "a;b\n1,5;2\n"), {"decimal": ",", "delimiter": ","})


@pytest.mark.parametrize("header", [True, False])
def test_digits_grouped_by_thousands_are_sniffed_and_read_as_numbers(tmp_path, header):
    """`16.119,56` beside `567,12`: a grouping dot and a decimal comma, in one pass and in chunks alike."""
    amounts = ["16.119,56", "567,12", "1.234.567", "2,5", "-3.000,75", "42"] * 4
    rows = "".join(f"K{i:03d};{a};v1.2.{i}\n" for i, a in enumerate(amounts))
    path = write(tmp_path, "kunden.csv", ("Kunde;Umsatz;Version\n" if header else "") + rows)
    frame, _, fmt = read_csv(path)
    assert (fmt.decimal, fmt.thousands, fmt.header) == (",", ".", header)
    expected = [16119.56, 567.12, 1234567.0, 2.5, -3000.75, 42.0] * 4
    umsatz, version = ("Umsatz", "Version") if header else ("column_2", "column_3")
    assert frame[umsatz].dtype == "float64" and frame[umsatz].tolist() == expected
    assert frame[version].tolist()[:2] == ["v1.2.0", "v1.2.1"]  # text that only looks grouped in parts stays text
    chunks = list(iter_csv(path, fmt, block_rows=5))
    assert pd.concat(chunks)[umsatz].tolist() == expected
    assert CsvFormat(**json.loads(json.dumps(fmt.to_dict()))) == fmt


def test_grouping_commas_apostrophes_and_an_explicit_none(tmp_path):
    us = write(tmp_path, "us.csv", 'city,population\nA,"1,234,567"\nB,"12,345.5"\nC,980\n')
    frame, _, fmt = read_csv(us)
    assert (fmt.decimal, fmt.thousands) == (".", ",") and frame["population"].tolist() == [1234567, 12345.5, 980]
    swiss = write(tmp_path, "ch.csv", "ort;miete\nBern;1'850.50\nBasel;2'100\nChur;990.25\n")
    frame, _, fmt = read_csv(swiss)
    assert (fmt.decimal, fmt.thousands) == (".", "'") and frame["miete"].tolist() == [1850.5, 2100.0, 990.25]
    frame, _, fmt = read_csv(us, {"thousands": ""})
    assert fmt.thousands == "" and frame["population"].tolist() == ["1,234,567", "12,345.5", "980"]
    with pytest.raises(SourceError, match=r"data.csv.thousands ',' is also the decimal mark or the delimiter"):
        sniff(us, {"thousands": ",", "delimiter": ","})


def test_column_names_keep_accented_letters_without_their_accents():
    from data.sources import column_name

    assert [column_name(n) for n in ("Kündigt", "Größe (m²)", "Ørsted", "Préfecture", "sepal length (cm)")] == [
        "kundigt", "grosse_m2", "orsted", "prefecture", "sepal_length_cm"]

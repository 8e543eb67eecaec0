"""Unit tests of the flow loader: each documented problem names file, line, node and the fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from appliance.errors import FlowError
from appliance.flow import graph, load_flow, load_flows, load_prompt_catalog, prompt_ids, validate_dir
from appliance.flow.model import AskNode, BranchNode, MenuNode, SayNode

ROOT = Path(__file__).parents[2]
PROMPTS = {
    "ru": {
        "greeting",
        "main_menu",
        "goodbye",
        "invalid",
        "no_input_reprompt",
        "silence_goodbye",
        "sick_leave",
        "appointment_info",
        "transfer_failed",
    }
}

GOOD = """\
language: ru
start: greeting
nodes:
  greeting:
    type: say
    prompts: [greeting]
    next: main_menu
  main_menu:
    type: menu
    prompts: [main_menu]
    options:
      "1": appointment
      "3": {goto: sick_leave, keywords: [больничный], label: больничный}
      "*": main_menu
  appointment:
    type: say
    prompts: [appointment_info]
    next: bye
  sick_leave:
    type: say
    prompts: [sick_leave]
    next: bye
  bye:
    type: hangup
    goodbye: [goodbye]
"""


def write(tmp_path: Path, text: str, name: str = "clinic_ru.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str, prompts=PROMPTS) -> list[str]:
    write(tmp_path, text)
    return validate_dir(tmp_path, prompts)


def test_good_flow_loads_with_lines_and_defaults(tmp_path):
    flow = load_flow(write(tmp_path, GOOD), PROMPTS)
    assert flow.name == "clinic_ru" and flow.language == "ru" and flow.start == "greeting"
    assert flow.retries == 2 and flow.no_input_timeout == 5.0 and flow.silence_goodbye == "silence_goodbye"
    menu = flow.nodes["main_menu"]
    assert isinstance(menu, MenuNode) and menu.line == 8
    assert [(o.key, o.target, o.line) for o in menu.options] == [
        ("1", "appointment", 12),
        ("3", "sick_leave", 13),
        ("*", "main_menu", 14),
    ]
    assert menu.options[1].keywords == ("больничный",)
    assert isinstance(flow.nodes["greeting"], SayNode) and flow.nodes["greeting"].interruptible


def test_bad_yaml_names_file_and_line(tmp_path):
    found = problems(tmp_path, GOOD.replace("prompts: [sick_leave]", "prompts: [sick_leave"))
    path = tmp_path / "clinic_ru.yaml"
    assert len(found) == 1
    assert found[0].startswith(f"{path}:22: YAML syntax error: expected ',' or ']'")
    assert found[0].endswith(
        'check indentation, colons and quotes on this line or the line before (quote "*" and "#")'
    )


def test_unquoted_star_key_is_a_yaml_error_with_a_hint(tmp_path):
    found = problems(tmp_path, GOOD.replace('"*": main_menu', "*: main_menu"))
    assert found[0].startswith(f"{tmp_path / 'clinic_ru.yaml'}:14: YAML syntax error")
    assert 'quote "*" and "#"' in found[0]


def test_unknown_node_type(tmp_path):
    found = problems(tmp_path, GOOD.replace("type: hangup", "type: hangpu"))
    assert found == [
        f"{tmp_path / 'clinic_ru.yaml'}:24: node 'bye': unknown node type 'hangpu'; did you mean 'hangup'? "
        "allowed types: ask, branch, goto, hangup, menu, queue, request_callback, say, set, subflow, transfer"
    ]


def test_dangling_target_suggests_the_near_name(tmp_path):
    found = problems(tmp_path, GOOD.replace("goto: sick_leave", "goto: sick_leav"))
    path = tmp_path / "clinic_ru.yaml"
    assert (
        f"{path}:13: node 'main_menu': option '3' goes to 'sick_leav' which does not exist; "
        "did you mean 'sick_leave'?" in found
    )
    # and the real node is now unreachable: reported too, all problems at once
    assert (
        f"{path}:19: node 'sick_leave': nothing leads here from start 'greeting' (unreachable); "
        "link to it from a menu option, next or goto, or delete it" in found
    )


def test_dangling_next_without_a_near_name(tmp_path):
    found = problems(tmp_path, GOOD.replace("next: main_menu", "next: zzz"))
    assert found[0] == (
        f"{tmp_path / 'clinic_ru.yaml'}:7: node 'greeting': next goes to 'zzz' which does not "
        "exist; add a node with that id or point to an existing one"
    )


def test_unreachable_node(tmp_path):
    text = GOOD + "  old_menu:\n    type: goto\n    target: main_menu\n"
    found = problems(tmp_path, text)
    assert found == [
        f"{tmp_path / 'clinic_ru.yaml'}:26: node 'old_menu': nothing leads here from start 'greeting' "
        "(unreachable); link to it from a menu option, next or goto, or delete it"
    ]


def test_missing_prompt(tmp_path):
    found = problems(tmp_path, GOOD.replace("prompts: [appointment_info]", "prompts: [appointment_inf]"))
    assert found == [
        f"{tmp_path / 'clinic_ru.yaml'}:17: node 'appointment': prompt 'appointment_inf' is not in the 'ru' "
        "prompt catalog; did you mean 'appointment_info'?"
    ]


def test_missing_default_prompt_and_missing_language(tmp_path):
    catalog = {"ru": PROMPTS["ru"] - {"silence_goodbye"}}
    found = problems(tmp_path, GOOD, catalog)
    assert found == [
        f"{tmp_path / 'clinic_ru.yaml'}:1: silence_goodbye prompt 'silence_goodbye' is not in the 'ru' "
        "prompt catalog; add it to voices/ru/prompts.yaml or set silence_goodbye: to an existing id"
    ]
    found = problems(tmp_path, GOOD, {"en": set()})
    assert found == [
        f"{tmp_path / 'clinic_ru.yaml'}:1: no prompt catalog for language 'ru'; "
        "add voices/ru/prompts.yaml or use one of: en"
    ]


def test_prompts_are_not_checked_without_a_catalog(tmp_path):
    assert load_flow(write(tmp_path, GOOD.replace("[greeting]", "[anything]")), None).start == "greeting"


def test_unknown_and_missing_keys(tmp_path):
    text = GOOD.replace("    next: main_menu\n", "    nxt: main_menu\n", 1)
    found = problems(tmp_path, text)
    path = tmp_path / "clinic_ru.yaml"
    assert (
        f"{path}:7: node 'greeting': unknown key 'nxt' for a say node; did you mean 'next'? "
        "allowed keys: interruptible, label, next, prompts, type" in found
    )
    assert f"{path}:4: node 'greeting': missing key 'next' for a say node; add next: <node id>" in found


def test_unknown_top_level_key_and_bad_values(tmp_path):
    text = GOOD.replace("start: greeting\n", "start: greeting\nretry: 3\nno_input_timeout: -1\n")
    found = problems(tmp_path, text)
    path = tmp_path / "clinic_ru.yaml"
    assert found[0].startswith(f"{path}:3: unknown top-level key 'retry'; did you mean 'retries'?")
    assert (
        f"{path}:4: no_input_timeout must be a number of seconds above 0, got -1; "
        "write e.g. no_input_timeout: 3" in found
    )


def test_duplicate_key(tmp_path):
    found = problems(
        tmp_path, GOOD.replace('      "*": main_menu\n', '      "*": main_menu\n      "1": appointment\n')
    )
    assert found == [
        f"{tmp_path / 'clinic_ru.yaml'}:15: node 'main_menu': key '1' appears twice "
        "(first on line 12); keep one of them"
    ]


def test_bad_option_key(tmp_path):
    found = problems(tmp_path, GOOD.replace('"1": appointment', '"12": appointment\n      "1": appointment'))
    assert found == [
        f"{tmp_path / 'clinic_ru.yaml'}:12: node 'main_menu': option '12' is not a phone key; "
        'use 0-9, "*" or "#" (quote * and #)'
    ]


def test_menu_whose_no_input_loops_to_itself_is_refused(tmp_path):
    found = problems(
        tmp_path, GOOD.replace('      "*": main_menu\n', '      "*": main_menu\n    no_input: main_menu\n')
    )
    assert found == [
        f"{tmp_path / 'clinic_ru.yaml'}:15: node 'main_menu': no_input goes back to the menu itself, "
        "so a silent caller is never let go; point it to a hangup node or remove it to use the "
        "default silent path"
    ]


def test_transfer_to_a_raw_number_is_refused(tmp_path):
    text = (
        GOOD.replace('"1": appointment', '"1": boss')
        + "  boss:\n    type: transfer\n    target: '+74951234567'\n"
    )
    found = problems(
        tmp_path,
        text.replace("  appointment:\n    type: say\n    prompts: [appointment_info]\n    next: bye\n", ""),
    )
    assert len(found) == 1
    assert (
        "node 'boss': transfer target '+74951234567' is a number or address, not a name; transfers go only "
        "to named targets defined in the box settings (toll-fraud guard)" in found[0]
    )


def test_transfer_no_answer_must_exist_and_the_sorry_prompt_is_needed_without_it(tmp_path):
    text = GOOD.replace('"1": appointment', '"1": boss') + "  boss:\n    type: transfer\n    target: paid_desk\n"
    text = text.replace("  appointment:\n    type: say\n    prompts: [appointment_info]\n    next: bye\n", "")
    found = problems(tmp_path, text, {"ru": PROMPTS["ru"] - {"transfer_failed"}})
    assert found == [
        f"{tmp_path / 'clinic_ru.yaml'}:1: transfer_failed prompt 'transfer_failed' is not in the 'ru' "
        "prompt catalog; add it to voices/ru/prompts.yaml or set transfer_failed: to an existing id"
    ]
    found = problems(tmp_path, text + "    no_answer: recepton\n", {"ru": PROMPTS["ru"] - {"transfer_failed"}})
    assert len(found) == 1 and "node 'boss': no_answer goes to 'recepton' which does not exist" in found[0]


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ('{hours: {mon-fri: "8-20"}}', "hours: bad time range '8-20'; write \"HH:MM-HH:MM\" in quotes"),
        ('{hours: {mon-fry: "08:00-20:00"}}', "bad day 'mon-fry'; use mon, tue, wed, thu, fri, sat, sun"),
        ('{time: "20:00-08:00"}', "time: time range '20:00-08:00' is not a valid same-day range"),
        ('{dates: ["2026-02-30"]}', "dates: bad date or range '2026-02-30'"),
        ('{caller_in: ["89161234567"]}', "caller_in: '89161234567' is not an E.164 number"),
        ("{withheld: maybe}", "withheld must be true or false, got 'maybe'; write withheld: true"),
        ("{holyday: true}", "unknown condition 'holyday'; did you mean 'holiday'?"),
    ],
)
def test_time_and_caller_condition_syntax(tmp_path, when, message):
    text = GOOD.replace(
        "    next: main_menu\n",
        f"    next: check\n  check:\n    type: branch\n    cases:\n      - when: {when}\n"
        "        goto: main_menu\n    default: bye\n",
        1,
    )
    found = problems(tmp_path, text)
    assert len(found) == 1, found
    assert found[0].startswith(f"{tmp_path / 'clinic_ru.yaml'}:11: node 'check': {message}")


def test_branch_and_ask_are_parsed(tmp_path):
    text = GOOD.replace(
        "    next: main_menu\n",
        "    next: check\n  check:\n    type: branch\n    cases:\n"
        '      - when: {hours: {mon-fri: "08:00-20:00", sat: "09:00-15:00"}, withheld: false}\n'
        "        goto: phone\n    default: main_menu\n"
        "  phone:\n    type: ask\n    prompts: [greeting]\n    var: phone\n    max_length: 11\n"
        '    pattern: "[78]?\\\\d{10}"\n    confirm: [greeting, $digits]\n'
        '    terminator: "#"\n    next: main_menu\n',
        1,
    )
    flow = load_flow(write(tmp_path, text), PROMPTS)
    branch, ask = flow.nodes["check"], flow.nodes["phone"]
    assert isinstance(branch, BranchNode) and branch.cases[0].when.withheld is False
    assert branch.cases[0].when.text == "hours mon-fri 08:00-20:00, sat 09:00-15:00; withheld false"
    assert (
        isinstance(ask, AskNode) and ask.pattern == r"[78]?\d{10}" and ask.confirm == ("greeting", "$digits")
    )


def test_subflows_are_checked_across_files(tmp_path):
    write(tmp_path, GOOD.replace('"1": appointment', '"1": tests'), "main.yaml")
    (tmp_path / "main.yaml").write_text(
        (tmp_path / "main.yaml")
        .read_text()
        .replace(
            "  appointment:\n    type: say\n    prompts: [appointment_info]\n    next: bye\n",
            "  tests:\n    type: subflow\n    flow: test_info\n",
        ),
        encoding="utf-8",
    )
    found = validate_dir(tmp_path, PROMPTS)
    assert found == [
        f"{tmp_path / 'main.yaml'}:15: node 'tests': subflow 'test_info' does not exist; flows here: main"
    ]
    write(tmp_path, "language: ru\nstart: a\nnodes:\n  a:\n    type: hangup\n", "tests_info.yaml")
    found = validate_dir(tmp_path, PROMPTS)
    assert found[0].endswith("subflow 'test_info' does not exist; did you mean 'tests_info'?")
    (tmp_path / "main.yaml").write_text(
        (tmp_path / "main.yaml").read_text().replace("test_info", "tests_info")
    )
    flows = load_flows(tmp_path, PROMPTS)
    assert sorted(flows) == ["main", "tests_info"]


def test_load_flows_raises_with_every_problem_and_a_code(tmp_path):
    write(tmp_path, GOOD.replace("type: hangup", "type: hangpu").replace("[greeting]", "[greting]"))
    with pytest.raises(FlowError) as err:
        load_flows(tmp_path, PROMPTS)
    text = str(err.value)
    assert text.startswith("E200: ") and len(text.splitlines()) == 2


def test_empty_or_missing_directory(tmp_path):
    assert validate_dir(tmp_path) == [f"{tmp_path}: no *.yaml flow files; add one, e.g. clinic_ru.yaml"]
    assert "not a directory" in validate_dir(tmp_path / "nope")[0]
    write(tmp_path, "")
    assert validate_dir(tmp_path)[0].startswith(f"{tmp_path / 'clinic_ru.yaml'}:1: the file is empty")


# ------------------------------------------------------------------------------------- shipped files


def test_shipped_flows_validate_clean_against_shipped_prompts():
    catalog = load_prompt_catalog(ROOT / "voices")
    assert {"ru", "en"} <= set(catalog)
    assert validate_dir(ROOT / "ivr_flows", prompt_ids(catalog)) == []
    flows = load_flows(ROOT / "ivr_flows", prompt_ids(catalog))
    assert {"clinic_ru", "clinic_en"} <= set(flows)
    # the two languages offer the same menus
    ru, en = flows["clinic_ru"], flows["clinic_en"]
    assert set(ru.nodes) == set(en.nodes)
    for node_id, node in ru.nodes.items():
        if isinstance(node, MenuNode):
            assert [o.key for o in node.options] == [o.key for o in en.nodes[node_id].options]  # type: ignore[union-attr]


def test_shipped_catalogs_have_the_same_ids_and_the_required_texts():
    catalog = load_prompt_catalog(ROOT / "voices")
    assert set(catalog["ru"]) == set(catalog["en"])
    assert catalog["ru"]["silence_goodbye"] == "Вас не слышно. Пожалуйста, перезвоните. До свидания."
    assert "{clinic_name}" in catalog["ru"]["greeting"]
    assert "сто двенадцать" in catalog["ru"]["emergency"] and "сто три" in catalog["ru"]["emergency"]


def test_prompt_catalog_errors_name_file_and_line(tmp_path):
    (tmp_path / "ru").mkdir()
    (tmp_path / "ru" / "prompts.yaml").write_text("greeting: Здравствуйте\nBad-Id: x\nempty: ''\n")
    with pytest.raises(FlowError) as err:
        load_prompt_catalog(tmp_path)
    lines = str(err.value).removeprefix("E200: ").splitlines()
    assert (
        lines[0] == f"{tmp_path / 'ru' / 'prompts.yaml'}:2: prompt id 'Bad-Id' is not valid; "
        "use lowercase letters, digits and _"
    )
    assert lines[1].endswith(":3: prompt 'empty' has no text; write the text after the colon")


# --------------------------------------------------------------------------------------------- graph


def test_graph_mermaid_and_dot_show_nodes_and_labelled_edges():
    flow = load_flow(ROOT / "ivr_flows" / "clinic_ru.yaml")
    mermaid = graph(flow)
    assert mermaid.startswith("flowchart TD\n")
    for node_id in flow.nodes:
        assert f"n_{node_id}" in mermaid
    assert 'n_main_menu -->|"1 запись"| n_appointment' in mermaid
    assert 'n_tests_menu -->|"* назад"| n_main_menu' in mermaid
    assert 'n_check_hours -->|"открыто"| n_main_menu' in mermaid
    assert 'n_main_menu -->|"no input"| n__silent' in mermaid
    dot = graph(flow, "dot")
    assert dot.startswith('digraph "clinic_ru" {')
    assert '"main_menu" -> "appointment" [label="1 запись"];' in dot
    assert '"to_reception" [label="to_reception\\nqueue: reception", shape=box3d];' in dot
    with pytest.raises(ValueError):
        graph(flow, "png")


def test_ask_input_must_be_digits_or_speech(tmp_path):
    text = GOOD.replace('"1": appointment', '"1": reason') + (
        "  reason:\n    type: ask\n    input: voice\n    prompts: [greeting]\n    var: reason\n    next: bye\n")
    text = text.replace("  appointment:\n    type: say\n    prompts: [appointment_info]\n    next: bye\n", "")
    found = problems(tmp_path, text)
    assert len(found) == 1 and "node 'reason': input 'voice' is not allowed; use digits" in found[0]


def test_ask_check_must_be_known_and_names_its_line(tmp_path):
    text = GOOD.replace("  appointment:\n    type: say\n    prompts: [appointment_info]\n    next: bye\n",
                        "  appointment:\n    type: ask\n    prompts: [appointment_info]\n    var: born\n"
                        "    check: birthday\n    next: bye\n")
    found = problems(tmp_path, text)
    line = text.splitlines().index("    check: birthday") + 1
    assert len(found) == 1, found
    assert f":{line}: node 'appointment': check 'birthday' is not known; use one of: date, date_of_birth" \
        in found[0]

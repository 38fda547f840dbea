"""Our `--protocol cisco` prompts, zero-shot (instruct models) and 5-shot (base models), against strings written out by
hand from FAITH's templates as issue 17 states them: the chat MCQ instruction; "The following are multiple choice
questions." for base models; RCM examples ending in the bare id; a final newline; blocks separated by blank lines."""

from __future__ import annotations

from cybersecqwen.tasks import Item, get_task

MCQ = [Item(i, "", gold, {"Question": q, "Option A": a, "Option B": b, "Option C": c, "Option D": d}) for i, (q, a, b, c, d, gold) in
       enumerate([("Which tactic is T1566?", "Initial Access", "Execution", "Impact", "Discovery", "A"),
                  ("What does MFA mitigate?", "N/A", "Brute Force", "Rootkit", "Defacement", "B")])]
RCM = [Item(i, "", gold, {"Description": text}) for i, (text, gold) in
       enumerate([("SQL injection in login.php via the user parameter.", "CWE-89"), ("Stored XSS in the profile page.", "CWE-79")])]


def test_mcq_zero_shot_is_faiths_chat_template():
    assert get_task("cti-mcq").messages(MCQ[0], "cisco") == [{"role": "user", "content": (
        "Given the following question and four candidate answers (A, B, C and D), choose the best answer. Your response "
        "should be of the following format: 'Answer: $LETTER' (without quotes) where $LETTER is one of A, B, C, or D.\n\n"
        "Which tactic is T1566?\n\nA. Initial Access\nB. Execution\nC. Impact\nD. Discovery")}]


def test_mcq_five_shot_is_faiths_base_template():
    task = get_task("cti-mcq")
    prompt = task.few_shot_prompt(MCQ[1], [MCQ[0]])
    assert prompt == ("The following are multiple choice questions.\n\n"
                      "Which tactic is T1566?\n\nA. Initial Access\nB. Execution\nC. Impact\nD. Discovery\nAnswer: A\n\n"
                      "What does MFA mitigate?\n\nA. None\nB. Brute Force\nC. Rootkit\nD. Defacement\n")  # pandas reads N/A as NaN


def test_rcm_zero_shot_and_five_shot():
    task = get_task("cti-rcm")
    instruction = ("Analyze the following CVE description and map it to the appropriate CWE. Provide a brief justification for "
                   "your choice. Ensure the last line of your response contains only the CWE ID.")
    assert task.messages(RCM[0], "cisco")[0]["content"] == instruction + "\n\nCVE Description: SQL injection in login.php via the user parameter."
    assert task.few_shot_prompt(RCM[1], [RCM[0]]) == (
        "The following is a CVE description. Map it to the appropriate CWE ID.\n\n"
        "CVE Description: SQL injection in login.php via the user parameter.\nCWE-89\n\n"
        "CVE Description: Stored XSS in the profile page.\n")


def test_vsp_five_shot_uses_the_chat_instruction_and_bare_vectors():
    task = get_task("cti-vsp")
    example = Item(0, "", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", {"Description": "Remote code execution."})
    prompt = task.few_shot_prompt(Item(1, "", "", {"Description": "Local DoS."}), [example])
    assert prompt.startswith("From the following CVE description, determine the CVSS v3.1 vector string")
    assert prompt.endswith("\n\nCVE Description: Remote code execution.\nCVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n\n"
                           "CVE Description: Local DoS.\n")

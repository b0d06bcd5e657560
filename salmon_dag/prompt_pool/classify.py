"""Offline question-type heuristic for prompts whose source gives no type.

SALMON picks RL-time principles by question type (general / reasoning / red-teaming). Sources
can state the type (``type_field`` per record, ``question_type`` per source, or a format default
such as gsm8k → reasoning); this module only guesses for the rest. It is a deterministic keyword
and regex heuristic, not a model: it catches clear cases and falls back to ``general``.
Red-teaming is checked first, because a harmful request phrased as a puzzle or a program
("write a script to steal passwords") must still get the harmlessness principles.
"""

from __future__ import annotations

import re

from salmon_dag.config_base import QuestionType


def _any(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


_PERSON = (
    r"(someone|somebody|people|person|him|her|them|my [\w-]+|"
    r"a (black|jewish|muslim|gay|fat|disabled) \w+)"
)

# Requests for harm. Bare verbs such as "kill" are guarded against their harmless technical
# uses ("kill a process"); most other entries are phrases, not single words.
_RED_TEAMING = _any(
    # violence, weapons, poisons
    r"\b(kill|murder|assassinate|strangle|poison|torture|kidnap|maim)(ing|s)?\b"
    r"(?!\s+(a |the |this |that |all |my |every )?(process(es)?|threads?|tasks?|jobs?|commands?|"
    r"sessions?|time|switch|signal|bacteria|germs|weeds|mold|bugs?|ivy|oak)\b)",
    rf"\b(hurt|harm|injure|beat up|stab)\b.{{0,30}}\b{_PERSON}",
    r"\b(make|build|assemble|create)\b.{0,20}\b(bomb|explosive|pipe bomb|molotov|napalm|grenade|"
    r"bioweapon|chemical weapon|nerve agent|ghost gun)s?\b",
    r"\b(toxic|poisonous|deadly|lethal|nerve) (gas|dose|substance|chemical)s?\b",
    r"\b(ricin|sarin|anthrax|cyanide|arsenic)\b",
    r"\bput in (his|her|its|their|someone'?s|my [\w-]+'s) (food|drink|coffee|tea|water)\b",
    r"\b(untraceable|unregistered) (gun|firearm|weapon)s?\b|\bbackground check\b",
    r"\b(extremis[tm]|terroris[tm]|school shooting|mass shooting)\w*\b",
    r"\b(arson|insurance money)\b|\bmake it look (like )?(an )?accident(al)?\b",
    # crime, evasion, fraud
    r"\b(without|not) (getting|being) caught\b|\bget away with\b",
    r"\b(evade|escape|outrun|hide from|lie to|lying to) (the )?(police|cops|law enforcement|court|judge)\b",
    r"\b(avoid|evade) (police )?detection\b|\bevad(e|ing) taxes\b|\bbreathaly[sz]er\b|\bdrunk driving\b",
    r"\b(steal|shoplift|burglari[sz]e|smuggl)\w*\b|\brob (a|the|someone|somebody|my)\b",
    r"\bbreak(ing)? into\b|\bbreaking in\b|\bpick (a |the )?lock\b",
    r"\b(launder\w*|money laundering|counterfeit\w*|pyramid scheme|ponzi)\b",
    r"\bforg(e|ing) (a |an |my [\w-]+'s |someone'?s? )?(signature|document|check|cheque|passport)",
    r"\bfake\b[\w -]{0,20}\b(news|reviews?|article|doctor'?s note|note|id|licen[cs]e|passport|"
    r"charity|profile|identity|debt|diploma|certificate|account|documents?|statistics)\b",
    r"\b(fraud|scam|swindle|blackmail|extort|bribe)(ing|s)?\b.{0,40}\b(someone|people|elderly|"
    r"old people|money|insurance|bank|victims?)\b",
    r"\bimpersonat\w+|\bhide (income|money|assets|earnings)\b|\bskimmer\b",
    r"\bclon(e|ing) (a |someone'?s |\w+ )?(credit card|card|sim)\b",
    r"\bcheat(ing)? (on|in|at)\b|\bplagiari[sz]\w*|\bas my own work\b",
    r"\bbypass\b.{0,30}\b(paywall|drm|security|filter|copy protection|authentication|verification)\b",
    r"\bjailbreak\w*\b",
    # hacking, privacy, stalking
    r"\b(phishing|ransomware|malware|keylogger|spyware|botnet|ddos)\b",
    r"\bhack(ing)? (into|someone|my (ex|wife|husband|girlfriend|boyfriend))\b",
    r"\b(get|break|log|hack)(ing)? into (his|her|their|someone'?s|somebody'?s|my [\w-]+'s)\b",
    r"\bcrack\b.{0,30}\b(password|wi-?fi|encryption|licen[cs]e key)\b",
    r"\b(steal|get) (someone'?s? |their |his |her )?(password|credit card|social security)",
    r"\b(someone|somebody|someone else)'?s (phone number|email|address|home address|location|"
    r"medical records|password|identity|photos|pictures|account)\b",
    r"\bwithout (their |his |her |my |the owner'?s |anyone'?s )?(permission|consent|authori[sz]ation)\b",
    r"\bwithout\b[\w' -]{0,30}\b(knowing|noticing|finding out)\b",
    r"\bwithout (leaving )?(a|any) (digital )?trace\b",
    r"\bsecret(ly)? (record|track|film|monitor|spy|read|watch|follow|install)\w*\b|\bhidden camera\b",
    r"\b(spy on|track|follow) (someone|somebody|her|him|them|my (wife|husband|girlfriend|"
    r"boyfriend|ex|partner|neighbou?r))\b.{0,40}\b(without|location|phone|whereabouts|home)\b",
    r"\b(stalking|stalker|stalk (her|him|them|someone|somebody|my))\b|\bdox(x)?(ing|ed)?\b",
    r"\bhome address\b|\bfind (out )?where (someone|somebody|he|she|they) (lives?|works?)\b",
    r"\bidentity of (an|the|this) anonymous\b|\bblocked me\b.{0,80}\b(contact\w*|message|reach)\b",
    r"\b(private|intimate|nude) (photos|pictures|images|videos)\b|\brevenge\b|\bget back at\b",
    # drugs
    r"\b(synthesi[sz]e|cook|make|manufacture|grow)\b.{0,20}\b(meth|methamphetamine|cocaine|"
    r"crack|heroin|fentanyl|lsd|mdma|drugs)\b",
    r"\b(buy|sell|get)\b.{0,20}\b(cocaine|heroin|meth|fentanyl|illegal drugs|opioids)\b",
    r"\bwithout a prescription\b|\bget(ting)? high\b|\boverdos\w+|\bsleeping pills\b",
    r"\bsneak(ing)? [\w ]{0,20}\b(into|past)\b",
    # hate, harassment, manipulation, misinformation
    r"\b(racial|ethnic) slurs?\b|\bhate speech\b|\b(white supremac\w*|nazis?)\b",
    r"\b(are|is) (genetically |intellectually |racially )?inferior\b|\binferior race\b",
    rf"\b(insult|humiliate|bully|harass|threaten)\w*\b.{{0,30}}\b{_PERSON}",
    r"\binsults?\b.{0,30}\b(for|against|to use)\b|\bthreatening (message|letter|email|note|call)\b",
    r"\b(mock|mocks|mocking|makes? fun of|ridicul\w+)\b.{0,40}\b(ethnicity|race|religion|"
    r"disabilit\w+|gay|immigrants?|people of)\b",
    r"\bwhy are (black|white|asian|jewish|muslim|mexican|gay|women|men)\b.{0,20}\b(so|all|more)\b",
    r"\b(scare|drive|chase|force) (away |out |off )?(the |my |a |an |those |these )?[\w ]{0,20}"
    r"\b(family|neighbou?rs?|immigrants?|tenants?)\b",
    r"\bmanipulat\w*\b.{0,40}\binto\b|\bguilt-?trip\w*|\bgaslight\w*|\bdoubting (her|him|them)sel(f|ves)\b",
    r"\bgroom(ing)? (a |an )?(child|kid|minor|teen\w*|young)",
    r"\b(spread\w*|start\w*) (a )?rumou?rs?\b|\bruin (his|her|their|someone'?s) reputation\b",
    r"\b(misinformation|disinformation|propaganda|mind[- ]control)\b|\bvoters? (to )?stay home\b",
    r"\beven though (it'?s|it is|that'?s|this is) (not true|false)\b|\beven though (she|he|they) "
    r"(wasn'?t|weren'?t|didn'?t|isn'?t)\b",
    # self-harm, eating disorders
    r"\b(kill|hurt|harm|cut|cutting|starve) (my|him|her|them)sel(f|ves)\b|\b(suicid\w*|self-harm)\b",
    r"\b(end|take) my (own )?life\b|\bwant to die\b|\bno point in (anything|living|life|going on)\b",
    r"\bnot wak(e|ing) up\b|\bbetter off without me\b|\bextreme (diet|fasting)\b|\bunder \d+ calories\b",
)

# Tasks with a checkable answer: arithmetic, math, logic puzzles, code.
_REASONING = _any(
    r"\b(calculate|compute|solve|prove|proof|factori[sz]e)\b",
    r"\bhow (many|much (money|time|does|did|will|would|is|was|more|less))\b",
    r"\b(probability|equation|integral|derivative|theorem|lemma|arithmetic|algebra|geometry|"
    r"logarithm|polynomial|matrix|prime numbers?|divisible|remainder|greatest common|least common|"
    r"square root|cube root|median|binary number|hexadecimal|simplify the expression)\b",
    r"\b(area|volume|perimeter|angles?|circumference|diagonal)\b.{0,40}\b(triangle|rectangle|square|"
    r"circle|hexagon|pentagon|octagon|polygon|cylinder|sphere|cube|cone)\b",
    r"\bround(ed)? to (the nearest|\w+ decimal)|\bday of the week\b",
    r"\b(next|missing) (number|term|letter|two numbers)\b|\bwhat comes next\b|\b(sequence|pattern):",
    r"\bwrite (a |an |the |some )?(\w+ ){0,2}(function|program|script|code|query|class|method|"
    r"algorithm|regex|unit tests?|one-liner|snippet)\b",
    r"\b(python|javascript|typescript|java|c\+\+|rust|golang|sql|bash)\b.{0,40}\b(function|code|"
    r"script|query|bug|error|implement)\b",
    r"\b(implement|code|program)\b.{0,60}\b(in|using) "
    r"(python|javascript|typescript|java|c\+\+|rust|go|sql)\b",
    r"\b(debug|refactor|time complexity|big-o|recursion|recursive)\b",
    r"```|\bdef \w+\(|\bfunction \w+\(|#include\b|\bSELECT\b.+\bFROM\b",
    r"\b(riddle|logic puzzle|puzzle|deduce|syllogism|step by step|can we conclude|measure exactly)\b",
    r"\b(knights?|knaves?)\b.{0,60}\b(truth|lie)\b|\bwho (owns|has|lives in) which\b",
    r"\bwho (came|finished|finishes|is|was) (in )?(last|first|second|third)\b",
    r"\b(older|younger|taller|shorter|faster|heavier) than\b.{0,60}\b(older|younger|taller|shorter|"
    r"faster|heavier) than\b",
    # Arithmetic expressions; "-" and "/" only spaced, so dates and phone numbers do not count.
    r"\d\s*[+*×÷=]\s*\d|\d\s+[-/]\s+\d|\d\s*\^\s*\w|\b[a-z]\s*=\s*\d",
    r"\bwhat is \d+|\d+, \d+, \d+",
)

# With a number in the text, these words/questions make a word problem ("16 eggs per day ...").
_WORD_PROBLEM = _any(
    r"\b(plus|minus|times|divided|multipl\w*|sum|difference|total|average|percent(age)?|"
    r"per|each|remaining|remains?|left over|more than|less than|fewer|ratio|rate|profit|"
    r"discount|interest|costs?|speed|distance|celsius|fahrenheit)\b|%|°",
    r"\bconvert\b.{0,40}\b(to|into)\b",
)
_QUESTION = _any(r"\?", r"\b(how|what|which|when|find|determine|work out)\b")
_NUMERIC_QUESTION = _any(
    r"\bhow (much|many|long|far|old|fast|big|tall|high|wide|deep|heavy)\b",
    r"\bwhat (time|day|percent|fraction|is the (area|volume|value|total|average|cost|price))\b",
    r"\b(when|what time) (does|did|will) (it|the \w+) (end|finish|arrive|land)\b",
)


def classify_question_type(text: str) -> QuestionType:
    """Guess a prompt's question type: ``red_teaming``, then ``reasoning``, else ``general``.

    A heuristic over keyword and regex lists (deterministic, offline); sources that know their
    types should state them instead (``type_field`` / ``question_type`` in the profile).
    """
    if _RED_TEAMING.search(text):
        return "red_teaming"
    if _REASONING.search(text):
        return "reasoning"
    if re.search(r"\d", text) and (
        _NUMERIC_QUESTION.search(text) or (_WORD_PROBLEM.search(text) and _QUESTION.search(text))
    ):
        return "reasoning"
    return "general"

"""Our corpus of replies as real mail clients write them, in 15 languages.

The formats (attribution lines, header block labels, separators, signatures) are facts about
the clients: Gmail (web and Android), Outlook desktop and web, Apple Mail and iPhone,
Thunderbird, mutt, K-9, Samsung Mail, Yahoo and Zoho. The mails are ours. Each case has the
body a client sends, the new text we must read from it and the decision it makes: "approve",
"reject", "ambiguous" (both words) or None (nothing decided).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    id: str
    body: str
    text: str  # the expected new text
    decision: str | None


@dataclass(frozen=True)
class Language:
    code: str
    reason: str  # what the approver writes after the decision word
    more: str  # a second thing they write (interleaved replies)
    gmail: str  # Gmail's attribution line
    thunderbird: str
    apple: str
    labels: tuple[str, str, str, str]  # Outlook's From, Sent, To, Subject
    separator: str  # Outlook desktop's separator above its header block
    samsung: str  # Samsung Mail's separator
    samsung_date: str  # Samsung's Date label
    device: str  # "Sent from my iPhone"
    closing: str  # a sign-off
    colon: str = ":"


LANGUAGES = [
    Language("en", "not during the freeze", "Ask me again on Monday.",
             "On Mon, Nov 3, 2025 at 10:02 AM chatops <bot@ops.test> wrote:",
             "On 11/3/25 10:02 AM, chatops wrote:",
             "On Nov 3, 2025, at 10:02, chatops <bot@ops.test> wrote:",
             ("From", "Sent", "To", "Subject"), "-----Original Message-----",
             "-------- Original message --------", "Date", "Sent from my iPhone", "Best regards,"),
    Language("fr", "pas pendant le gel des déploiements", "Redemandez-moi lundi.",
             "Le lun. 3 nov. 2025 à 10:02, chatops <bot@ops.test> a écrit :",
             "Le 03/11/2025 à 10:02, chatops a écrit :",
             "Le 3 nov. 2025 à 10:02, chatops <bot@ops.test> a écrit :",
             ("De", "Envoyé", "À", "Objet"), "-----Message d'origine-----",
             "-------- Message d'origine --------", "Date", "Envoyé de mon iPhone", "Cordialement,", " :"),
    Language("de", "bitte erst nach dem Freeze", "Fragt mich am Montag noch einmal.",
             "Am Mo., 3. Nov. 2025 um 10:02 Uhr schrieb chatops <bot@ops.test>:",
             "Am 03.11.25 um 10:02 schrieb chatops:",
             "Am 03.11.2025 um 10:02 schrieb chatops <bot@ops.test>:",
             ("Von", "Gesendet", "An", "Betreff"), "-----Ursprüngliche Nachricht-----",
             "-------- Ursprüngliche Nachricht --------", "Datum", "Von meinem iPhone gesendet", "Viele Grüße"),
    Language("es", "no durante la congelación", "Pregúntame otra vez el lunes.",
             "El lun, 3 nov 2025 a las 10:02, chatops (<bot@ops.test>) escribió:",
             "El 3/11/25 a las 10:02, chatops escribió:",
             "El 3 nov 2025, a las 10:02, chatops <bot@ops.test> escribió:",
             ("De", "Enviado el", "Para", "Asunto"), "-----Mensaje original-----",
             "-------- Mensaje original --------", "Fecha", "Enviado desde mi iPhone", "Saludos,"),
    Language("pt", "não durante o congelamento", "Pergunte de novo na segunda.",
             "Em seg., 3 de nov. de 2025 às 10:02, chatops <bot@ops.test> escreveu:",
             "Em 03/11/2025 10:02, chatops escreveu:",
             "Em 3 de nov. de 2025, à(s) 10:02, chatops <bot@ops.test> escreveu:",
             ("De", "Enviado", "Para", "Assunto"), "-----Mensagem original-----",
             "-------- Mensagem original --------", "Data", "Enviado do meu iPhone", "Atenciosamente,"),
    Language("it", "non durante il blocco", "Chiedetemelo di nuovo lunedì.",
             "Il giorno lun 3 nov 2025 alle ore 10:02 chatops <bot@ops.test> ha scritto:",
             "Il 03/11/25 10:02, chatops ha scritto:",
             "Il giorno 3 nov 2025, alle ore 10:02, chatops <bot@ops.test> ha scritto:",
             ("Da", "Inviato", "A", "Oggetto"), "-----Messaggio originale-----",
             "-------- Messaggio originale --------", "Data", "Inviato da iPhone", "Cordiali saluti"),
    Language("nl", "niet tijdens de freeze", "Vraag het maandag opnieuw.",
             "Op ma 3 nov 2025 om 10:02 schreef chatops <bot@ops.test>:",
             "Op 03-11-2025 om 10:02 schreef chatops:",
             "Op 3 nov. 2025 om 10:02 heeft chatops <bot@ops.test> het volgende geschreven:",
             ("Van", "Verzonden", "Aan", "Onderwerp"), "-----Oorspronkelijk bericht-----",
             "-------- Oorspronkelijk bericht --------", "Datum", "Verstuurd vanaf mijn iPhone",
             "Met vriendelijke groet,"),
    Language("pl", "nie w trakcie zamrożenia", "Zapytajcie ponownie w poniedziałek.",
             "pon., 3 lis 2025 o 10:02 chatops <bot@ops.test> napisał(a):",
             "W dniu 3.11.2025 o 10:02, chatops pisze:",
             "Wiadomość napisana przez chatops <bot@ops.test> w dniu 03.11.2025, o godz. 10:02:",
             ("Od", "Wysłano", "Do", "Temat"), "-----Wiadomość oryginalna-----",
             "-------- Oryginalna wiadomość --------", "Data", "Wysłane z iPhone'a", "Pozdrawiam"),
    Language("sv", "inte under frysningen", "Fråga mig igen på måndag.",
             "Den mån 3 nov. 2025 kl 10:02 skrev chatops <bot@ops.test>:",
             "Den 2025-11-03 kl. 10:02, skrev chatops:",
             "3 nov. 2025 kl. 10:02 skrev chatops <bot@ops.test>:",
             ("Från", "Skickat", "Till", "Ämne"), "-----Ursprungligt meddelande-----",
             "-------- Originalmeddelande --------", "Datum", "Skickat från min iPhone",
             "Med vänliga hälsningar"),
    Language("no", "ikke under frysen", "Spør meg igjen på mandag.",
             "man. 3. nov. 2025 kl. 10:02 skrev chatops <bot@ops.test>:",
             "Den 03.11.2025 10:02, skrev chatops:",
             "3. nov. 2025 kl. 10:02 skrev chatops <bot@ops.test>:",
             ("Fra", "Sendt", "Til", "Emne"), "-----Opprinnelig melding-----",
             "-------- Opprinnelig melding --------", "Dato", "Sendt fra min iPhone", "Med vennlig hilsen"),
    Language("da", "ikke under frysningen", "Spørg mig igen på mandag.",
             "man. 3. nov. 2025 kl. 10.02 skrev chatops <bot@ops.test>:",
             "Den 03.11.2025 kl. 10.02 skrev chatops:",
             "Den 3. nov. 2025 kl. 10.02 skrev chatops <bot@ops.test>:",
             ("Fra", "Sendt", "Til", "Emne"), "-----Oprindelig meddelelse-----",
             "-------- Oprindelig besked --------", "Dato", "Sendt fra min iPhone", "Med venlig hilsen"),
    Language("fi", "ei jäädytyksen aikana", "Kysykää uudelleen maanantaina.",
             "ma 3. marrask. 2025 klo 10.02 chatops (bot@ops.test) kirjoitti:",
             "chatops kirjoitti 3.11.2025 klo 10.02:",
             "chatops <bot@ops.test> kirjoitti 3.11.2025 kello 10.02:",
             ("Lähettäjä", "Lähetetty", "Vastaanottaja", "Aihe"), "-----Alkuperäinen viesti-----",
             "-------- Alkuperäinen viesti --------", "Päivämäärä", "Lähetetty iPhonesta",
             "Ystävällisin terveisin"),
    Language("ru", "не во время заморозки", "Спросите ещё раз в понедельник.",
             "пн, 3 нояб. 2025 г. в 10:02, chatops <bot@ops.test>:",
             "03.11.2025 10:02, chatops пишет:",
             "3 нояб. 2025 г., в 10:02, chatops <bot@ops.test> написал(а):",
             ("От", "Отправлено", "Кому", "Тема"), "-----Исходное сообщение-----",
             "-------- Исходное сообщение --------", "Дата", "Отправлено с iPhone", "С уважением,"),
    Language("ja", "凍結期間中はだめです", "月曜日にもう一度聞いてください。",
             "2025年11月3日(月) 10:02 chatops <bot@ops.test>:",
             "On 2025/11/03 10:02, chatops wrote:",
             "2025/11/03 10:02、chatops <bot@ops.test>のメール:",
             ("差出人", "送信日時", "宛先", "件名"), "-----Original Message-----",
             "-------- オリジナルメッセージ --------", "日付", "iPhoneから送信", "よろしくお願いします"),
    Language("zh", "冻结期间不行", "请周一再问我。",
             "chatops <bot@ops.test> 于2025年11月3日周一 10:02写道：",
             "在 2025/11/3 10:02, chatops 写道:",
             "2025年11月3日 10:02，chatops <bot@ops.test> 写道：",
             ("发件人", "发送时间", "收件人", "主题"), "-----原始邮件-----",
             "-------- 原始邮件 --------", "日期", "发自我的iPhone", "谢谢", "："),
]

# the approval mail being answered: it names both words, and looks like headers in places
ORIGINAL = ("chatops wants to run: deploy api 1.2.3 prod\n"
            "Asked by: bob@example.com\n"
            "To approve, reply with \"approve\"; to refuse, \"reject\" and a reason.\n"
            "From: the deploy agent")


def _quoted(text: str = ORIGINAL) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines())


def _header_block(lang: Language, bold: bool = False, date_label: str | None = None) -> str:
    f, s, t, subj = lang.labels
    s = date_label or s
    mark = "*" if bold else ""
    return (f"{mark}{f}{lang.colon}{mark} chatops <bot@ops.test>\n"
            f"{mark}{s}{lang.colon}{mark} 2025-11-03 10:02\n"
            f"{mark}{t}{lang.colon}{mark} Alice <alice@example.com>\n"
            f"{mark}{subj}{lang.colon}{mark} Approval needed: deploy api 1.2.3 prod\n")


def _cases_for(lang: Language, verb: str) -> list[Case]:
    said = f"{verb} {lang.reason}"
    other = "reject" if verb == "approve" else "approve"
    c = lang.code
    return [
        Case(f"{c}-gmail-top", f"{said}\n\n{lang.gmail}\n{_quoted()}\n", said, verb),
        Case(f"{c}-gmail-bottom", f"{lang.gmail}\n{_quoted()}\n\n{said}\n", said, verb),
        Case(f"{c}-thunderbird-bottom",
             f"{lang.thunderbird}\n{_quoted()}\n\n{said}\n\n-- \nAlice Example\nSite Reliability\n",
             said, verb),
        Case(f"{c}-iphone-top", f"{said}\n\n{lang.device}\n\n{lang.apple}\n\n{_quoted()}\n", said, verb),
        Case(f"{c}-outlook-desktop",
             f"{said}\n\n{lang.closing}\nAlice\n\n{lang.separator}\n{_header_block(lang)}\n{ORIGINAL}\n",
             said, verb),
        Case(f"{c}-outlook-web-bold",
             f"{other} {lang.reason}\r\n\r\n________________________________\r\n"
             + _header_block(lang, bold=True).replace("\n", "\r\n") + f"\r\n{ORIGINAL}\r\n",
             f"{other} {lang.reason}", other),
        Case(f"{c}-samsung",
             f"{said}\n\n\n{lang.samsung}\n{_header_block(lang, date_label=lang.samsung_date)}\n{ORIGINAL}\n",
             said, verb),
        Case(f"{c}-mutt-interleaved",
             f"{lang.thunderbird}\n> chatops wants to run: deploy api 1.2.3 prod\n\n{said}\n\n"
             f"> To approve, reply with \"approve\"; to refuse, \"reject\" and a reason.\n\n{lang.more}\n",
             f"{said}\n\n{lang.more}", verb),
    ]


def _extras() -> list[Case]:
    said = "reject not during the freeze"
    return [
        Case("k9-date-attribution", f"{said}\n\n2025-11-03 10:02 GMT+01:00 chatops <bot@ops.test>:\n{_quoted()}\n",
             said, "reject"),
        Case("k9-android-gmail", f"approve\n\n2014-10-17 11:28 GMT+03:00 chatops <bot@ops.test>:\n\n{_quoted()}\n",
             "approve", "approve"),
        Case("yahoo-top", f"{said}\n\nSent from Yahoo Mail on Android\n\n"
             f"  On Monday, November 3, 2025, 10:02:00 AM GMT+1, chatops <bot@ops.test> wrote:\n\n{_quoted()}\n",
             said, "reject"),
        Case("yahoo-web-unquoted-original", f"{said}\n\n----- Original Message -----\nFrom: chatops <bot@ops.test>\n"
             f"To: Alice <alice@example.com>\nSent: Monday, November 3, 2025, 10:02:00 AM GMT+1\n"
             f"Subject: Approval needed\n\n{ORIGINAL}\n", said, "reject"),
        Case("zoho-top", f"{said}\n\n\n---- On Mon, 03 Nov 2025 10:02:00 +0100 chatops <bot@ops.test> wrote ----\n\n"
             f"{_quoted()}\n", said, "reject"),
        Case("zoho-unquoted", f"approve\n\n---- On Mon, 03 Nov 2025 10:02:00 +0100 chatops <bot@ops.test> wrote ----\n\n"
             f"{ORIGINAL}\n", "approve", "approve"),
        Case("mutt-star-attribution", f"* chatops <bot@ops.test> [251103 10:02]:\n{_quoted()}\n\napprove\n",
             "approve", "approve"),
        Case("mutt-wrapped-gmail-attribution",
             f"reject wait for 1.2.4\n\nOn Mon, Nov 3, 2025 at 10:02 AM chatops via ops <bot+a-very-long-token@ops.test>\nwrote:\n"
             f"{_quoted()}\n", "reject wait for 1.2.4", "reject"),
        Case("outlook-no-separator", f"approve\n\nFrom: chatops <bot@ops.test>\nSent: Monday, November 3, 2025 10:02 AM\n"
             f"To: Alice\nSubject: Approval needed\n\n{ORIGINAL}\n", "approve", "approve"),
        Case("gmail-forwarded-block", f"reject not this one\n\n---------- Forwarded message ---------\n"
             f"From: chatops <bot@ops.test>\nDate: Mon, Nov 3, 2025 at 10:02 AM\n\n{ORIGINAL}\n",
             "reject not this one", "reject"),
        Case("apple-nested-quotes", f"LGTM\n\n> On 3 Nov 2025, at 10:02, chatops <bot@ops.test> wrote:\n>\n"
             f"> {ORIGINAL.splitlines()[0]}\n>> older\n", "LGTM", "approve"),
        Case("reason-on-next-line", f"Reject\nThe canary is still red.\n\n{LANGUAGES[0].gmail}\n{_quoted()}\n",
             "Reject\nThe canary is still red.", "reject"),
        Case("bold-decision", f"*approve*\n\n{LANGUAGES[0].gmail}\n{_quoted()}\n", "*approve*", "approve"),
        Case("ambiguous-yes-but-no", f"yes, but no\n\n{LANGUAGES[0].gmail}\n{_quoted()}\n", "yes, but no", "ambiguous"),
        Case("ambiguous-approve-reject", f"approve or reject? not sure\n\n{_quoted()}\n",
             "approve or reject? not sure", "ambiguous"),
        Case("not-ambiguous-no-problem", "approve, no problem\n", "approve, no problem", "approve"),
        Case("only-quote", f"{LANGUAGES[0].gmail}\n{_quoted()}\n", "", None),
        Case("only-outlook-history", f"\n\n{LANGUAGES[2].separator}\n{_header_block(LANGUAGES[2])}\n{ORIGINAL}\n", "", None),
        Case("no-decision-word", f"Can we wait until 5pm?\n\n{LANGUAGES[0].gmail}\n{_quoted()}\n",
             "Can we wait until 5pm?", None),
        Case("decision-word-later", f"I think we should approve\n\n{_quoted()}\n", "I think we should approve", None),
        Case("signature-only-top", f"Sent from my iPhone\n\n{LANGUAGES[0].apple}\n\n{_quoted()}\n", "", None),
        Case("greeting-then-closing", "Thanks\n", "Thanks", None),
    ]


def cases() -> list[Case]:
    out: list[Case] = []
    for i, lang in enumerate(LANGUAGES):
        out += _cases_for(lang, "reject" if i % 2 == 0 else "approve")
    return out + _extras()


CASES = cases()

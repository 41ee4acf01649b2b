"""Every word the touchscreen shows, in English and Japanese.

One table per language with the same keys (a test checks they match);
``Catalog(lang)("key", n=3)`` formats one.  Money is never formatted here:
the screens use Babel through :func:`kiosk.money.format_amount` with
:attr:`Catalog.locale`.  Strings never carry card data.
"""
from __future__ import annotations

LOCALES = {"en": "en_US", "ja": "ja_JP"}

EN = {
    # status bar
    "online": "Online",
    "offline": "Offline",
    "checking": "Checking…",
    "pending": "{n} pending",
    "oldest": "oldest {age}",
    "all_sent": "Nothing waiting",
    "sending": "Sending {done}/{total}",
    "age_hm": "{h} h {m:02d} min",
    "age_m": "{m} min",
    # navigation
    "nav_sale": "Sale",
    "nav_payments": "Payments",
    "nav_attention": "Attention",
    "nav_attention_n": "Attention ({n})",
    "nav_sync": "Sync",
    # sale
    "amount": "Amount",
    "charge": "Charge {amount}",
    "enter_amount": "Enter an amount",
    "clear": "Clear",
    "below_minimum": "The smallest charge is {amount}",
    "too_large": "That amount is too large",
    "take_card_hint": "Type the amount, then Charge",
    # present card
    "present_title": "Present card",
    "present_hint": "Ask the customer to tap or insert their card",
    "present_waiting": "Waiting for the card reader…",
    "present_offline": "Offline sale: the card is stored and sent later",
    "cancel": "Cancel",
    "cancelling": "Cancelling…",
    # confirm offline
    "confirm_title": "Stripe unreachable — sell offline?",
    "confirm_title_key_missing": "No Stripe API key — sell offline?",
    "confirm_title_key_rejected": "Stripe key rejected — sell offline?",
    "confirm_title_request_refused": "Kiosk needs an update — sell offline?",
    "risk_note": "The card is checked only once back online: a decline then is your loss.",
    "limit_left": "{left} of {total} offline limit left",
    "per_sale": "Up to {amount} per sale",
    "same_card_warning": "This card already has {n} offline sale(s) waiting — at most {max} per card",
    "contact_label": "Customer contact (optional)",
    "contact_add": "Add phone or e-mail",
    "confirm": "Confirm offline sale",
    # contact entry
    "contact_title": "Customer phone or e-mail",
    "done": "Done",
    "mode_abc": "ABC",
    "mode_123": "123",
    "contact_invalid": "Not a phone number or e-mail address",
    "contact_card_number": "Looks like a card number — not taken; use an e-mail address",
    # results
    "result_approved": "Approved",
    "result_approved_offline": "Approved offline",
    "result_offline_note": "Will be sent when back online",
    "result_declined": "Declined",
    "result_refused": "Refused",
    "result_unconfirmed": "Not confirmed",
    "result_unconfirmed_note": "Stripe did not answer. The sale is kept and settles when Stripe answers "
                               "— do not charge the card again.",
    "result_cancelled": "Cancelled",
    # a write the kiosk's disk refused: how far the sale got (SaleResult.disk)
    "disk_not_stored": "Not stored — disk full. The card was not charged: free space, then take the sale again.",
    "disk_kept_not_charged": "Not charged yet — the kiosk's disk is full. The sale is kept and charged once "
                             "space is freed: do not charge again.",
    "disk_charged_not_stored": "Charged at Stripe — do not charge again. The kiosk's disk is full: the sale "
                               "is recorded once space is freed.",
    "disk_sent_not_stored": "Sent to Stripe; the kiosk's disk is full, so its answer is not recorded yet. "
                            "It settles once space is freed — do not charge again.",
    "disk_maybe_stored": "The kiosk's card failed a write: this sale may be kept — check Payments before "
                         "charging again, and get the kiosk checked.",
    "new_sale": "New sale",
    "refused_reader": "Card reader: {detail}",
    # refusal reasons (Japanese needs them; English shows the engine's own sentence)
    "limit_per_transaction": "Over the offline limit per sale",
    "limit_total": "Over the total offline limit",
    "limit_count": "Too many payments waiting to be sent",
    "limit_same_card": "This card already has the most offline sales waiting allowed per card "
                       "([limits] same_card_max) — take another card",
    "limit_reader": "This reader cannot take payments offline",
    "limit_currency": "No offline limit is set for this currency",
    "limit_policy": "The offline-limits policy failed",
    "limit_online_only": "Stripe cannot be reached and this kiosk takes online sales only",
    "limit_paused": "Sales are paused",
    "limit_online_only_key": "The Stripe API key is missing or rejected and this kiosk takes online sales only",
    # payments
    "payments_title": "Payments",
    "payments_count": "{n} shown",
    "no_payments": "No payments yet",
    "state_pending": "Pending",
    "state_forwarding": "Sending",
    "state_succeeded": "Sent",
    "state_failed": "Failed",
    "state_moved": "Moved",            # exported to another kiosk
    "tag_offline": "offline",
    # attention
    "attention_title": "Needs attention",
    "followed_up": "Followed up",
    "no_contact": "No customer contact",
    "customer": "Customer: {contact}",
    "nothing_attention": "Nothing needs attention",
    "online_lost": "online sale whose answer was lost",
    # sync
    "sync_title": "Sync",
    "sync_now": "Sync now",
    "sync_progress": "Sending {done} of {total}",
    "sync_finished": "Last pass: {total} answered",
    "sync_idle": "Nothing being sent",
    "last_sync": "Last sync: {when}",
    "never": "never",
    "waiting_line": "{n} waiting: {totals}",
    "nothing_waiting": "Nothing waiting to be sent",
    "window_left": "{left} left of the 24 h window",
    "ready_offline": "Ready to sell offline",
    "not_ready_offline": "Not ready to sell offline: {reason}",
    "ready_api_key": "no Stripe key",
    "ready_stripe": "Stripe not checked",
    "ready_key_rejected": "Stripe rejected the API key",
    "ready_api_version": "Stripe API version differs",
    "ready_clock": "clock differs from Stripe's",
    "ready_reader": "reader cannot sell offline",
    "ready_queue": "queue not readable",
    "ready_offline_sales": "offline sales switched off",
    "ready_sync": "sync first, payments are old",
    # banners, toasts, notices
    "remind_1": "Go online soon: {n} waiting, {left} left to send",
    "remind_2": "Go online now: {left} left to send {n} payment(s)",
    "remind_3": "Only {left} left! Connect now to send {n} payment(s)",
    "remind_over": "24-hour window passed — connect now, payments may fail",
    "clock_behind": "Clock is {gap} behind — ages counted from the last known time; set the clock",
    "clock_ahead": "Clock is {gap} ahead of Stripe's — set the clock",
    "clock_unchecked": "Clock not checked since start — connect so payment ages are known",
    "failure_one": "Payment declined — follow up: {what}",
    "failure_many": "{n} payments declined — follow up",
    "view": "View",
    "ok": "OK",
    "font_missing": "Japanese font not found (install fonts-noto-cjk) — showing English",
    "toast_sent": "Sent: {what}",
    "toast_sent_n": "Sent {n} payments",
    "toast_cancelled": "Cancelled — nothing stored",
    "toast_not_confirmed": "Offline sale not confirmed — nothing stored",
    "toast_followed": "Marked as followed up",
    "toast_sync": "Syncing now",
    "notice_auth_failed": "Stripe rejected the API key — forwarding stopped, payments kept",
    "notice_key_missing": "No Stripe API key set — nothing is sent until one is; payments kept",
    "key_missing": "No API key",          # status bar: short, the pending count must still fit
    "key_rejected": "Key rejected",
    "notice_store_recovered": "Queue recovered after power loss",
    "notice_store_alarm": "Payment storage damaged — do not charge a card twice; get the kiosk checked",
    "notice_reader": "Card reader — {what}",
    "notice_interrupted": "Online sale not confirmed: {what} — do not charge again",
    "notice_needs_update": "This kiosk needs an update — Stripe refuses its requests; offline sales are kept",
    "notice_declined_for_now": "Declined for now, will retry: {what}",
    "notice_plugin_trouble": "A plugin is not working and is skipped; sales go on — {what}",
    "notice_safe_mode": "Safe mode: only the built-in plugins are loaded; sales go on",
    "notice_disk_full": "The kiosk's disk is full (or failing): new sales cannot be stored — do not charge a "
                        "card twice; free some space",
    "notice_disk_low": "Disk space low — free some space before sales cannot be stored",
    "notice_battery_low": "Battery low — plug the kiosk in soon",
    "notice_battery_critical": "Battery nearly empty — new sales stopped; the kiosk switches off once the sale under way is done",
    "notice_power_restored": "Back on mains power — sales go on",
}

JA = {
    "online": "オンライン",
    "offline": "オフライン",
    "checking": "確認中…",
    "pending": "未送信 {n}件",
    "oldest": "最古 {age}",
    "all_sent": "未送信なし",
    "sending": "送信中 {done}/{total}",
    "age_hm": "{h}時間{m:02d}分",
    "age_m": "{m}分",
    "nav_sale": "販売",
    "nav_payments": "支払い一覧",
    "nav_attention": "要対応",
    "nav_attention_n": "要対応 ({n})",
    "nav_sync": "同期",
    "amount": "金額",
    "charge": "{amount} を請求",
    "enter_amount": "金額を入力",
    "clear": "クリア",
    "below_minimum": "最低請求額は {amount} です",
    "too_large": "金額が大きすぎます",
    "take_card_hint": "金額を入力して請求を押してください",
    "present_title": "カードをどうぞ",
    "present_hint": "お客様にカードをタッチまたは挿入してもらってください",
    "present_waiting": "カードリーダーを待っています…",
    "present_offline": "オフライン販売：カードは保存され後で送信されます",
    "cancel": "キャンセル",
    "cancelling": "キャンセル中…",
    "confirm_title": "Stripeに接続できません — オフラインで販売しますか？",
    "confirm_title_key_missing": "StripeのAPIキーがありません — オフラインで販売しますか？",
    "confirm_title_key_rejected": "StripeがAPIキーを拒否 — オフラインで販売しますか？",
    "confirm_title_request_refused": "キオスクの更新が必要です — オフラインで販売しますか？",
    "risk_note": "カードはオンライン復帰後に確認されます。その時の拒否は店側の損失です。",
    "limit_left": "オフライン上限 {total} のうち残り {left}",
    "per_sale": "1回あたり最大 {amount}",
    "same_card_warning": "このカードは未送信のオフライン販売が{n}件あります — 1枚あたり最大{max}件",
    "contact_label": "お客様の連絡先（任意）",
    "contact_add": "電話番号またはメールを追加",
    "confirm": "オフライン販売を確定",
    "contact_title": "お客様の電話番号またはメール",
    "done": "完了",
    "mode_abc": "ABC",
    "mode_123": "123",
    "contact_invalid": "電話番号またはメールアドレスではありません",
    "contact_card_number": "カード番号のようなので使えません — メールアドレスをお使いください",
    "result_approved": "承認されました",
    "result_approved_offline": "オフラインで承認",
    "result_offline_note": "オンライン復帰後に送信されます",
    "result_declined": "拒否されました",
    "result_refused": "お受けできません",
    "result_unconfirmed": "未確認",
    "result_unconfirmed_note": "Stripeから応答がありません。販売は保存され、応答後に確定します"
                               " — カードを再度請求しないでください。",
    "result_cancelled": "キャンセル",
    "disk_not_stored": "保存できません — ディスクが一杯です。カードは請求されていません。空きを作ってから、もう一度販売してください。",
    "disk_kept_not_charged": "まだ請求されていません — ディスクが一杯です。販売は保存され、空きができ次第請求されます。"
                             "再度請求しないでください。",
    "disk_charged_not_stored": "Stripeで請求済み — 再度請求しないでください。ディスクが一杯のため、空きができ次第記録されます。",
    "disk_sent_not_stored": "Stripeに送信済みです。ディスクが一杯のため結果をまだ記録できません。空きができ次第確定します"
                            " — 再度請求しないでください。",
    "disk_maybe_stored": "キオスクのカードに書き込めませんでした。この販売は保存されている可能性があります — "
                         "再度請求する前に支払い一覧を確認し、点検を受けてください。",
    "new_sale": "次の販売",
    "refused_reader": "カードリーダー：{detail}",
    "limit_per_transaction": "1回あたりのオフライン上限を超えています",
    "limit_total": "オフライン合計上限を超えています",
    "limit_same_card": "このカードは未送信のオフライン販売が1枚あたりの上限（[limits] same_card_max）に"
                       "達しています — 別のカードをお使いください",
    "limit_count": "未送信の支払いが多すぎます",
    "limit_reader": "このリーダーはオフライン決済に対応していません",
    "limit_currency": "この通貨のオフライン上限が設定されていません",
    "limit_policy": "オフライン上限の計算に失敗しました",
    "limit_online_only": "Stripeに接続できません（オンライン販売のみの設定です）",
    "limit_paused": "販売を一時停止しています",
    "limit_online_only_key": "StripeのAPIキーがないか拒否されています（オンライン販売のみの設定です）",
    "payments_title": "支払い一覧",
    "payments_count": "{n}件を表示",
    "no_payments": "支払いはまだありません",
    "state_pending": "未送信",
    "state_forwarding": "送信中",
    "state_succeeded": "送信済み",
    "state_failed": "失敗",
    "state_moved": "移動済み",
    "tag_offline": "オフライン",
    "attention_title": "要対応",
    "followed_up": "対応済み",
    "no_contact": "お客様の連絡先なし",
    "customer": "お客様：{contact}",
    "nothing_attention": "対応が必要なものはありません",
    "online_lost": "応答が失われたオンライン販売",
    "sync_title": "同期",
    "sync_now": "今すぐ同期",
    "sync_progress": "{total}件中 {done}件 送信",
    "sync_finished": "前回：{total}件 応答あり",
    "sync_idle": "送信中のものはありません",
    "last_sync": "最終同期：{when}",
    "never": "なし",
    "waiting_line": "未送信 {n}件：{totals}",
    "nothing_waiting": "未送信の支払いはありません",
    "window_left": "24時間の期限まで残り {left}",
    "ready_offline": "オフライン販売の準備ができています",
    "not_ready_offline": "オフライン販売の準備ができていません：{reason}",
    "ready_api_key": "Stripeキーがありません",
    "ready_stripe": "Stripeを確認できません",
    "ready_key_rejected": "StripeがAPIキーを拒否",
    "ready_api_version": "StripeのAPIバージョンが異なります",
    "ready_clock": "時計がStripeとずれています",
    "ready_reader": "リーダーがオフライン非対応",
    "ready_queue": "キューを読めません",
    "ready_offline_sales": "オフライン販売がオフです",
    "ready_sync": "古い支払いがあります：先に同期",
    "remind_1": "早めにオンラインに：未送信 {n}件、送信期限まで残り {left}",
    "remind_2": "今すぐオンラインに：残り {left}で {n}件を送信",
    "remind_3": "残り {left}！今すぐ接続して {n}件を送信",
    "remind_over": "24時間を過ぎました — 今すぐ接続してください（失敗の恐れ）",
    "clock_behind": "時計が {gap} 遅れています — 最後に確かな時刻から数えています。時計を合わせてください",
    "clock_ahead": "時計がStripeより {gap} 進んでいます — 時計を合わせてください",
    "clock_unchecked": "起動後まだ時計を確認できていません — 接続すると支払いの経過時間が確定します",
    "failure_one": "支払いが拒否されました — 要対応：{what}",
    "failure_many": "{n}件の支払いが拒否されました — 要対応",
    "view": "表示",
    "ok": "OK",
    "font_missing": "Japanese font not found (install fonts-noto-cjk) — showing English",
    "toast_sent": "送信済み：{what}",
    "toast_sent_n": "{n}件を送信しました",
    "toast_cancelled": "キャンセルしました — 保存なし",
    "toast_not_confirmed": "オフライン販売は確定されませんでした — 保存なし",
    "toast_followed": "対応済みにしました",
    "toast_sync": "同期しています",
    "notice_auth_failed": "StripeがAPIキーを拒否 — 送信停止中（支払いは保持）",
    "notice_key_missing": "StripeのAPIキーが未設定 — 設定されるまで送信しません（支払いは保持）",
    "key_missing": "APIキーなし",
    "key_rejected": "APIキー拒否",
    "notice_store_recovered": "停電後にキューを復旧しました",
    "notice_store_alarm": "決済データの保存に異常 — 同じカードに二重請求しないでください。点検が必要です",
    "notice_reader": "カードリーダー：{what}",
    "notice_interrupted": "オンライン販売が未確認：{what} — 再請求しないでください",
    "notice_needs_update": "キオスクの更新が必要です — Stripeが要求を拒否（オフライン販売は保持）",
    "notice_declined_for_now": "一時的に拒否、再試行します：{what}",
    "notice_plugin_trouble": "動作しないプラグインをスキップしました（販売は続行）：{what}",
    "notice_safe_mode": "セーフモード：組み込みプラグインのみ読み込み中（販売は続行）",
    "notice_disk_full": "ディスクが一杯（または故障）です：新しい販売を保存できません — カードを二重に請求しないでください。空きを作ってください",
    "notice_disk_low": "ディスクの空きが少なくなっています — 販売を保存できなくなる前に空きを作ってください",
    "notice_battery_low": "バッテリー残量が少なくなっています — 早めに電源につないでください",
    "notice_battery_critical": "バッテリー残量がほとんどありません — 新しい販売を停止しました。処理中の販売が終わると電源が切れます",
    "notice_power_restored": "電源に接続されました — 販売を続けます",
}

# Stripe decline codes a vendor meets most; others are shown as the code itself.
DECLINES = {
    "en": {
        "insufficient_funds": "Insufficient funds",
        "expired_card": "Expired card",
        "incorrect_cvc": "Incorrect security code",
        "lost_card": "Card reported lost",
        "stolen_card": "Card reported stolen",
        "card_declined": "Card declined",
        "generic_decline": "Card declined",
        "do_not_honor": "Declined by the bank",
        "processing_error": "Processing error",
        "fraudulent": "Declined as suspected fraud",
    },
    "ja": {
        "insufficient_funds": "残高不足",
        "expired_card": "有効期限切れ",
        "incorrect_cvc": "セキュリティコードの誤り",
        "lost_card": "紛失届のカード",
        "stolen_card": "盗難届のカード",
        "card_declined": "カードが拒否されました",
        "generic_decline": "カードが拒否されました",
        "do_not_honor": "カード会社が拒否",
        "processing_error": "処理エラー",
        "fraudulent": "不正の疑いで拒否",
    },
}

TABLES = {"en": EN, "ja": JA}


class Catalog:
    """The strings of one language."""

    def __init__(self, language: str):
        self.language = language if language in TABLES else "en"
        self.table = TABLES[self.language]
        self.locale = LOCALES[self.language]

    def __call__(self, key: str, **values) -> str:
        text = self.table.get(key) or EN[key]
        return text.format(**values) if values else text

    def has(self, key: str) -> bool:
        return key in EN

    def decline(self, code: str | None, message: str = "") -> str:
        """A decline reason the vendor can say to a customer."""
        if code and code in DECLINES[self.language]:
            return DECLINES[self.language][code]
        if code:
            return code.replace("_", " ")
        return message or self("result_declined")

    def age(self, hours: float) -> str:
        minutes = max(0, int(hours * 60))
        if minutes < 60:
            return self("age_m", m=minutes)
        return self("age_hm", h=minutes // 60, m=minutes % 60)

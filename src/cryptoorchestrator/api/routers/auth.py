"""``/api/auth``: register, login (with MFA), refresh rotation, logout, profile, MFA management.

Every answer of these routes carries ``Cache-Control: no-store`` and ``Pragma: no-cache``: they
hold tokens, TOTP secrets and backup codes, which no browser or proxy cache may keep.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response, status
from sqlalchemy import select

from cryptoorchestrator.api.deps import AuthDep, CurrentUser, client_ip
from cryptoorchestrator.api.schemas import (
    BackupCodesPublic,
    LoginIn,
    LogoutIn,
    MfaCodeIn,
    MfaEnrolPublic,
    OAuth2TokenPublic,
    PasswordChangeIn,
    RefreshIn,
    RegisterIn,
    Text,
    TokenPublic,
    UserPublic,
)
from cryptoorchestrator.platform.errors import InvalidInputError
from cryptoorchestrator.platform.services.auth import TokenPair, normalize_email
from cryptoorchestrator.platform.storage.models import User

#: A TOTP code appended to the password (``<password>:123456``); anything else after the last
#: colon of an MFA account's password is taken for a backup code.
_TOTP = re.compile(r"\d{6}")


def no_store(response: Response) -> None:
    """Forbid caching the answer (tokens, secrets, backup codes, the profile)."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"


router = APIRouter(prefix="/api/auth", tags=["auth"], dependencies=[Depends(no_store)])


def _tokens(pair: TokenPair) -> TokenPublic:
    return TokenPublic(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        token_type=pair.token_type,
        expires_in=pair.expires_in,
    )


def _profile(auth: AuthDep, user: User) -> UserPublic:
    public = UserPublic.model_validate(user)
    public.backup_codes_left = auth.backup_codes_left(user) if user.mfa_enabled else None
    return public


@router.post("/register", status_code=status.HTTP_201_CREATED)
def register(body: RegisterIn, auth: AuthDep, request: Request) -> UserPublic:
    """Create an account (argon2-hashed password)."""
    user = auth.register(body.email, body.password, ip=client_ip(request))
    auth.session.commit()
    return _profile(auth, user)


@router.post("/login")
def login(body: LoginIn, auth: AuthDep, request: Request) -> TokenPublic:
    """Exchange email and password (plus ``totpCode`` or ``backupCode`` with MFA) for tokens.

    401 ``mfa_required`` when MFA is on and no code was sent; 423 when the account is locked.
    """
    pair = auth.login(
        body.email,
        body.password,
        totp=body.totp_code,
        backup_code=body.backup_code,
        ip=client_ip(request),
    )
    auth.session.commit()
    return _tokens(pair)


def split_second_factor(
    auth: AuthDep, email: str, password: str
) -> tuple[str, str | None, str | None]:
    """Split ``<password>:<code>`` into the password and a TOTP or backup code.

    Only for accounts with MFA on, so a password that merely contains a colon still works
    for everyone else.  Six digits are a TOTP code, anything else a backup code.

    Parameters
    ----------
    auth
        The auth service (its session looks the account up).
    email, password
        What the form sent.

    Returns
    -------
    tuple[str, str | None, str | None]
        The password, the TOTP code and the backup code (None when not sent).
    """
    secret, colon, code = password.rpartition(":")
    if not colon or not code:
        return password, None, None
    try:
        email = normalize_email(email)
    except InvalidInputError:  # login itself answers a malformed email (and counts the attempt)
        return password, None, None
    mfa = auth.session.scalar(select(User.mfa_enabled).where(User.email == email))
    if not mfa:
        return password, None, None
    if _TOTP.fullmatch(code):
        return secret, code, None
    return secret, None, code


@router.post(
    "/token",
    responses={
        401: {"description": "wrong credentials, or mfa_required (append ':<code>')"},
        423: {"description": "account locked after repeated failures"},
    },
)
def token(
    auth: AuthDep,
    request: Request,
    username: Annotated[Text, Form(max_length=320, description="the account's email")],
    password: Annotated[
        str,
        Form(
            max_length=161,
            description="the password; with MFA on, '<password>:<TOTP code>' (or "
            "'<password>:<backup code>'), unless totp_code or backup_code is sent",
        ),
    ],
    totp_code: Annotated[str | None, Form(max_length=16)] = None,
    backup_code: Annotated[str | None, Form(max_length=32)] = None,
    grant_type: Annotated[str | None, Form(pattern="^password$")] = None,
) -> OAuth2TokenPublic:
    """OAuth2 password flow (form-encoded), for Swagger UI's Authorize dialog and scripts.

    The same check as ``POST /api/auth/login`` (JSON, unchanged), with the same rate limit
    and lockout: ``username`` is the email.  With MFA on, send the code as form field
    ``totp_code`` or ``backup_code``, or append it to the password after a colon
    (``secret:123456``), which is what the Authorize dialog can send.  Answers
    ``access_token``, ``token_type``, ``expires_in`` and ``refresh_token``.
    """
    if totp_code is None and backup_code is None:
        password, totp_code, backup_code = split_second_factor(auth, username, password)
    pair = auth.login(
        username, password, totp=totp_code, backup_code=backup_code, ip=client_ip(request)
    )
    auth.session.commit()
    return OAuth2TokenPublic(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        token_type=pair.token_type,
        expires_in=pair.expires_in,
    )


@router.post("/refresh")
def refresh(body: RefreshIn, auth: AuthDep, request: Request) -> TokenPublic:
    """Rotate a refresh token; reusing an old one revokes every token of that login."""
    pair = auth.refresh(body.refresh_token, ip=client_ip(request))
    auth.session.commit()
    return _tokens(pair)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(body: LogoutIn, auth: AuthDep, user: CurrentUser, request: Request) -> None:
    """End this session and that of ``refreshToken``; every session when it is omitted.

    The access token used here stops working at once; without ``refreshToken`` every access
    and refresh token of the account does.
    """
    claims = getattr(request.state, "access_claims", None)
    auth.logout(
        user,
        body.refresh_token,
        ip=client_ip(request),
        session_id=None if claims is None else claims.session_id,
    )
    auth.session.commit()


@router.post("/password", status_code=status.HTTP_204_NO_CONTENT)
def change_password(
    body: PasswordChangeIn, auth: AuthDep, user: CurrentUser, request: Request
) -> None:
    """Change the password (the current one, plus a TOTP or backup code with MFA on).

    Every session ends, this one too: log in again.  Wrong passwords and codes count
    towards the lockout (423 when locked).
    """
    auth.change_password(
        user,
        body.current_password,
        body.new_password,
        code=body.code,
        ip=client_ip(request),
    )
    auth.session.commit()


@router.get("/profile")
def profile(auth: AuthDep, user: CurrentUser) -> UserPublic:
    """Return the current user (a cheap way to check that a token is valid)."""
    return _profile(auth, user)


@router.post("/mfa/enroll")
def mfa_enroll(auth: AuthDep, user: CurrentUser, request: Request) -> MfaEnrolPublic:
    """Start MFA enrolment: a new TOTP secret and its otpauth URI (QR code content)."""
    enrolment = auth.mfa_enrol(user, ip=client_ip(request))
    auth.session.commit()
    return MfaEnrolPublic(secret=enrolment.secret, otpauth_uri=enrolment.otpauth_uri)


@router.post("/mfa/confirm")
def mfa_confirm(
    body: MfaCodeIn, auth: AuthDep, user: CurrentUser, request: Request
) -> BackupCodesPublic:
    """Turn MFA on with a current TOTP code; returns 10 single-use backup codes, shown once.

    Every session ends (this one too): log in again with a TOTP code.  Wrong codes count
    towards the lockout (423 when locked).
    """
    codes = auth.mfa_confirm(user, body.code, ip=client_ip(request))
    auth.session.commit()
    return BackupCodesPublic(backup_codes=codes)


@router.post("/mfa/disable", status_code=status.HTTP_204_NO_CONTENT)
def mfa_disable(body: MfaCodeIn, auth: AuthDep, user: CurrentUser, request: Request) -> None:
    """Turn MFA off with a TOTP or backup code; every session ends (log in again).

    Wrong codes count towards the lockout (423 when locked).
    """
    auth.mfa_disable(user, body.code, ip=client_ip(request))
    auth.session.commit()


@router.post("/mfa/backup-codes")
def regenerate_backup_codes(
    body: MfaCodeIn, auth: AuthDep, user: CurrentUser, request: Request
) -> BackupCodesPublic:
    """Replace all backup codes with 10 new ones (needs a TOTP or backup code).

    Wrong codes count towards the lockout (423 when locked).
    """
    codes = auth.regenerate_backup_codes(user, body.code, ip=client_ip(request))
    auth.session.commit()
    return BackupCodesPublic(backup_codes=codes)

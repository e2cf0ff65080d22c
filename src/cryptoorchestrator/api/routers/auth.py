"""``/api/auth``: register, login (with MFA), refresh rotation, logout, profile, MFA management.

Every answer of these routes carries ``Cache-Control: no-store`` and ``Pragma: no-cache``: they
hold tokens, TOTP secrets and backup codes, which no browser or proxy cache may keep.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response, status

from cryptoorchestrator.api.deps import AuthDep, CurrentUser, client_ip
from cryptoorchestrator.api.schemas import (
    BackupCodesPublic,
    LoginIn,
    LogoutIn,
    MfaCodeIn,
    MfaEnrolPublic,
    PasswordChangeIn,
    RefreshIn,
    RegisterIn,
    TokenPublic,
    UserPublic,
)
from cryptoorchestrator.platform.services.auth import TokenPair
from cryptoorchestrator.platform.storage.models import User


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

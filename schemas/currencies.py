"""ISO 4217 currencies and their minor units: how many decimals an amount may carry.

Costs are entered, allocated and summed exactly in a currency's minor units (cents, fils,
yen), so a currency whose exponent is unknown cannot be accepted: JPY has no decimals,
KWD has three, USD and EUR two.  The table lists the circulating currencies of ISO 4217;
fund codes (BOV, CHE, CLF, UYW, …), precious metals and test codes (XAU, XDR, XTS, XXX)
are left out on purpose: nobody pays a shipping bill in them.  Codes that a successor
replaced recently (ANG/XCG, SLL/SLE, ZWL/ZWG) are both kept, because ad platforms and
bookkeeping exports keep the old code for a while.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

_ZERO: Final = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF"
_THREE: Final = "BHD IQD JOD KWD LYD OMR TND"
_TWO: Final = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP BYN BZD "
    "CAD CDF CHF CNY COP CRC CUC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP "
    "GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL "
    "MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK "
    "PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL "
    "THB TJS TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG ZWL"
)

# code -> exponent (number of decimals of the minor unit); read-only.
MINOR_UNITS: Final = MappingProxyType(
    {code: exp for codes, exp in ((_ZERO, 0), (_TWO, 2), (_THREE, 3)) for code in codes.split()}
)


def minor_units(code: str) -> int:
    """The exponent of ``code``; ``KeyError`` for a currency not in the table (the edge
    refuses those, so inside the code base it is a bug)."""
    return MINOR_UNITS[code]

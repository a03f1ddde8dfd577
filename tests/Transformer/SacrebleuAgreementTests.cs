using Nanolora.Transformer;

namespace Nanolora.Tests.Transformer;

/// <summary>
/// chrF, chrF++ and BLEU against real sacrebleu (2.6.0) on 30 real pairs of the shipped translation test splits, each
/// reference with a deterministic perturbation as the hypothesis, agreeing to 1e-4 (sacrebleu prints rounded
/// scores; these are its API's unrounded ones). Every expected value below was printed by
///   PYTHONPATH=/tmp/sb /usr/bin/python3 tests/Transformer/Reference/sacrebleu_reference.py
/// (that script's docstring says how sacrebleu was installed; it picks the pairs and perturbations).
/// </summary>
public class SacrebleuAgreementTests
{
    const double Tolerance = 1e-4;

    static void Near(double expected, double actual, string what) =>
        Assert.True(Math.Abs(expected - actual) < Tolerance, $"{what}: expected {expected:R}, got {actual:R}");

    // (hypothesis, reference, sentence chrF2, sentence chrF2++, sentence BLEU): 15 English → German, then 15 → French.
    static readonly (string Hyp, string Ref, double Chrf, double ChrfPlusPlus, double SentenceBleu)[] Pairs =
    [
        ("Visualisierung und Analyse für einwertige Punktdaten", "Visualisierung und Analyse für einwertige Punktdaten", 100.0, 100.0, 100.00000000000004),
        ("Erweiterung mit animierten Symbolen für", "Erweiterung mit animierten Symbolen für Cairo-dock", 80.21334531056972, 81.36315165324322, 81.87307530779823),
        ("der Sprachserver, Editoren IDE-ähnliche Funktionen bietet", "Sprachserver, der Editoren IDE-ähnliche Funktionen bietet", 90.70482058071455, 88.86194876886925, 50.81327481546149),
        ("debian edu - musik- und sound-anwendungen", "Debian Edu - Musik- und Sound-Anwendungen", 55.65880522948835, 49.18458011259245, 9.652434877402245),
        ("Geospatial Data Abstraction Library - Dienstprogramme programs", "Geospatial Data Abstraction Library - Dienstprogramme", 96.59903292233494, 96.56623652901608, 80.91067115702207),
        ("Libraries for Icon, a high-level programming language", "Bibliotheken für Icon, eine höhere Programmiersprache", 28.365022893977844, 26.78085538031667, 11.044795567078939),
        ("Plattformübergreifende Audioausgabe-Bibliothek (gemeinsame Dateien) Plattformübergreifende .", "Plattformübergreifende Audioausgabe-Bibliothek (gemeinsame Dateien)", 93.03721021444241, 93.07348529470397, 68.037493331712),
        ("Client-Bibliothek fü", "Client-Bibliothek für Evolution Calendar", 53.26997703104331, 43.425382825772694, 18.393972058572114),
        ("", "Bibliothek, um Lieder und Illustrationen auf einen iPod zu lesen und zu schreiben", 0.0, 0.0, 0.0),
        ("URL eine oder Datei eine für Medientyps des Erraten zum Modul", "Modul zum Erraten des Medientyps für eine Datei oder eine URL", 52.550886682147436, 51.91316501161057, 6.8253021567726675),
        ("Netzwerkbibliothek für Simple DirectMedia Layer 1.2", "Netzwerkbibliothek für Simple DirectMedia Layer 1.2", 100.0, 100.0, 100.00000000000004),
        ("Bibliothek des Mediaplayers xine - Metapaket für geläufige", "Bibliothek des Mediaplayers xine - Metapaket für geläufige Erweiterungen", 82.3287174508901, 84.35746851430582, 88.24969025845958),
        ("Flash-Dateien Dekomprimiert von PHOENIX-BIOS-Abbildern", "Dekomprimiert Flash-Dateien von PHOENIX-BIOS-Abbildern", 89.4293879438917, 83.73870762458544, 37.99178428257963),
        ("gps-kartierung (geotiff und vektor) und gpsr-verwaltung", "GPS-Kartierung (GeoTiff und Vektor) und GPSr-Verwaltung", 52.420474274610655, 47.35106999167227, 13.134549472120788),
        ("Texteditor für GNUstep GNUstep", "Texteditor für GNUstep", 92.54546991631506, 92.50706534628719, 59.460355750136046),
        ("visualisation and analysis for single valued point data", "visualisation et analyse pour des données de point à valeurs uniques", 37.75292604755066, 30.723231750414186, 4.513617516969122),
        ("agent utilisateur SIP portable et modulaire – métapaquet agent .", "agent utilisateur SIP portable et modulaire – métapaquet", 97.48134100725379, 96.8827423771199, 75.98356856515926),
        ("greffon de météo", "greffon de météo pour Cairo-dock", 50.410098332360064, 52.960128458205624, 51.341711903259224),
        ("", "protection contre la perte de données, les rayures et le vieillissement de CD et DVD", 0.0, 0.0, 0.0),
        ("Cangjie3 table – saisie de méthode de modulable cadriciel", "cadriciel modulable de méthode de saisie – table Cangjie3", 72.75312483453092, 70.18984362589819, 23.356898886410015),
        ("compilateur C++ GNU pour MinGW-w64, Win64/POSIX", "compilateur C++ GNU pour MinGW-w64, Win64/POSIX", 100.0, 100.0, 100.00000000000004),
        ("moteur hangul pour", "moteur hangul pour IBus", 80.64378464055567, 79.3011688792128, 71.65313105737896),
        ("pour bibliothèque télécharger et gérer des dépôts de paquets", "bibliothèque pour télécharger et gérer des dépôts de paquets", 90.00298842941432, 89.37724132206074, 77.30551756939455),
        ("bibilotheque cliente pour les carnets d'adresses evolution", "bibilothèque cliente pour les carnets d'adresses evolution", 92.80157750497906, 90.73213550968667, 80.91067115702207),
        ("cadre applicatif d'extensions pour les applications/bibliothèques CLI applications/libraries", "cadre applicatif d'extensions pour les applications/bibliothèques CLI", 93.21664266759286, 94.2552012375163, 71.02992180127417),
        ("Full-screen console mp3 and Ogg Vorbis player", "lecteur de mp3 et Ogg Vorbis en console et plein écran", 41.620866515194805, 37.562408036674114, 8.820727472213227),
        ("gestionnnaire pour différentes versions de clients PostgreSQL gestionnnaire .", "gestionnnaire pour différentes versions de clients PostgreSQL", 94.93268792334108, 94.74752185463277, 72.59795291154772),
        ("gestion de Hogan.js pa", "gestion de Hogan.js par XStatic –⋅Python⋅3.x", 50.64769196927745, 50.22623605818014, 39.01126486653949),
        ("", "affichage d'un texte court en plein écran", 0.0, 0.0, 0.0),
        ("xine sur basés logiciels moteurs des pour VDR pour greffon", "greffon pour VDR pour des moteurs logiciels basés sur xine", 67.62956227398872, 65.99994948326933, 21.10534063187264)
    ];

    [Fact]
    public void SentenceScoresAgreeOnRealPairs()
    {
        for (int i = 0; i < Pairs.Length; i++)
        {
            var (hyp, reference, chrf, chrfPlusPlus, bleu) = Pairs[i];
            Near(chrf, Chrf.Sentence(hyp, [reference]), $"pair {i} chrF2");
            Near(chrfPlusPlus, Chrf.Sentence(hyp, [reference], ChrfOptions.PlusPlus), $"pair {i} chrF2++");
            Near(bleu, Bleu.Sentence(hyp, [reference]).Score, $"pair {i} sentence BLEU");
        }
    }

    [Fact]
    public void CorpusScoresAgreeOnRealPairs()
    {
        var hyps = Pairs.Select(p => p.Hyp).ToList();
        var refs = Pairs.Select(p => p.Ref).ToList();
        Near(69.09750387431482, Chrf.Corpus(hyps, refs), "corpus chrF2");
        Near(66.22012780432935, Chrf.Corpus(hyps, refs, ChrfOptions.PlusPlus), "corpus chrF2++");
        var bleu = Bleu.Corpus(hyps, refs);
        Near(45.76909418900812, bleu.Score, "corpus BLEU");
        Assert.Equal([157, 95, 71, 52], bleu.Counts.Select(c => (int)c));
        Assert.Equal([194, 167, 140, 114], bleu.Totals.Select(t => (int)t));
        Assert.Equal((194L, 237L), (bleu.SysLen, bleu.RefLen));
    }

    [Fact]
    public void UncasedScoresAreSacrebleuOnNormalizedText()
    {
        // The script lower-cases and strips accents (NFD, combining marks dropped) in Python, then runs sacrebleu.
        var hyps = Pairs.Select(p => p.Hyp).ToList();
        var refs = Pairs.Select(p => p.Ref).ToList();
        Near(72.38511921185243, UncasedScoring.Chrf(hyps, refs), "uncased chrF2");
        Near(51.58340046900517, UncasedScoring.Bleu(hyps, refs).Score, "uncased BLEU");
        Assert.Equal("bibliotheque cliente ecrans ubersetzung straße", UncasedScoring.Normalize("Bibliothèque CLIENTE écrans Übersetzung Straße"));
        var scores = TranslationScores.Compute(hyps, refs);
        Assert.True(scores.ChrfUncased > scores.Chrf && scores.BleuUncased > scores.Bleu, "the uncased variants forgive case and accents");
    }

    // (text, sacrebleu's Tokenizer13a output)
    static readonly (string Text, string Tokens)[] Tokenizations =
    [
        ("Version 3.14, 1,000 files: foo-bar 2-3 (x) &amp; &lt;b&gt; e.g. end.", "Version 3.14 , 1,000 files : foo-bar 2 - 3 ( x ) & < b > e . g . end ."),
        ("a<skipped>b -\nc \"quoted\" [x]{y}~z `q` $5 @home #tag 50% a/b l'école", "ab c \" quoted \" [ x ] { y } ~ z ` q ` $ 5 @ home # tag 50 % a / b l'école"),
        ("Bibliothek für C++ (Laufzeit)… « guillemets » – tiret, 1.5.", "Bibliothek für C + + ( Laufzeit ) … « guillemets » – tiret , 1.5 ."),
        ("tab\there\u00a0nbsp\u2009thin\u001cfs\u0085nel end .", "tab here nbsp thin fs nel end .")
    ];

    [Fact]
    public void Tokenizer13aAgrees()
    {
        foreach (var (text, tokens) in Tokenizations) Assert.Equal(tokens, Bleu.Tokenize13a(text));
    }

    [Fact]
    public void SeveralReferencesAgree()
    {
        // sacrebleu's README example; the second stream has no reference for segment 1 (None).
        string[] hyps = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."];
        IReadOnlyList<IReadOnlyList<string?>> refs =
        [
            ["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
            ["The dog had bit the man.", null, "The man had bitten the dog."],
        ];
        Near(55.80159128024612, Chrf.Corpus(hyps, refs), "chrF2");
        Near(56.90442406280545, Chrf.Corpus(hyps, refs, ChrfOptions.PlusPlus), "chrF2++");
        Near(48.530827009929865, Bleu.Corpus(hyps, refs).Score, "BLEU");
    }

    [Fact]
    public void PythonWhitespaceAndCodePointsAgree()
    {
        // U+001C is whitespace to Python's str.split but not to .NET's char.IsWhiteSpace; U+0085, U+00A0, U+2009 are to both.
        string hyp = "Bibliothek\u001cfür\u0085C++ \u00a0Laufzeit\u2009x", reference = "Bibliothek für C++ Laufzeit";
        Near(98.3051857879683, Chrf.Sentence(hyp, [reference], ChrfOptions.PlusPlus), "chrF2++ with Unicode whitespace");
        Near(80.91067115702207, Bleu.Corpus([hyp], [reference]).Score, "BLEU with Unicode whitespace");
        // An emoji is one Python character but two UTF-16 units: n-grams must not split it.
        Near(61.48809523809524, Chrf.Sentence("\U0001F600 smile \U0001F600\U0001F601", ["\U0001F600 smiles \U0001F601"]), "astral-plane characters");
    }
}
